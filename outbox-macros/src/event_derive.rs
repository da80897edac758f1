//! `#[derive(Event)]`: implements `Event` and declares the type for startup coverage checks.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr, Path};

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    match expand(input) {
        Ok(tokens) => tokens,
        Err(err) => err.to_compile_error(),
    }
}

fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "an event type cannot be generic: each event needs one stable type name",
        ));
    }
    let mut name: Option<LitStr> = None;
    let mut krate: Option<Path> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("outbox")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "the event name must not be empty",
                    ));
                }
                name = Some(lit);
                Ok(())
            } else if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                krate = Some(lit.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown option; expected `name = \"…\"` or `crate = \"…\"`"))
            }
        })?;
    }
    let ident = &input.ident;
    let name = name.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::outbox_core));
    let ident_str = ident.to_string();
    Ok(quote! {
        impl #krate::Event for #ident {
            const EVENT_TYPE: &'static str = #name;
        }
        const _: () = {
            #krate::__private::inventory::submit! {
                #krate::__private::EventDeclaration {
                    event_type: #name,
                    rust_type: ::core::concat!(::core::module_path!(), "::", #ident_str),
                }
            }
        };
    })
}
