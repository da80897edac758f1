//! Code generation for `#[handler]`: the original function, plus a registration wrapped in
//! `const _: () = { … };` that reaches support crates only through `outbox_core::__private`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, Path};

use crate::handler_attr::{HandlerArgs, check_fn};

/// Expands `#[handler(attr)] item`; on error, emits the errors and the item unchanged.
pub(crate) fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(err) => {
            let err = syn::Error::new(err.span(), "#[handler] can only be placed on an `async fn`");
            return with_errors(item, err);
        }
    };
    let mut args = HandlerArgs::default();
    let parser = syn::meta::parser(|meta| args.parse_option(meta));
    let mut errors: Option<syn::Error> = syn::parse::Parser::parse2(parser, attr.clone()).err();
    if errors.is_none() && args.event.is_none() {
        errors = Some(syn::Error::new_spanned(
            if attr.is_empty() {
                quote!(#[handler])
            } else {
                attr
            },
            "missing `event = \"EventType\"`: name the event type this handler is registered for",
        ));
    }
    let shape = match check_fn(&item_fn) {
        Ok(shape) => Some(shape),
        Err(err) => {
            match &mut errors {
                Some(e) => e.combine(err),
                None => errors = Some(err),
            }
            None
        }
    };
    match (errors, shape, args.event.as_ref()) {
        (None, Some(shape), Some(event)) => {
            let krate: Path = args
                .krate
                .clone()
                .unwrap_or_else(|| syn::parse_quote!(::outbox_core));
            let ident = &item_fn.sig.ident;
            let event_ty = shape.event_type;
            // The default name is the function's own name, not its path: moving the function to
            // another module must not rename it, since its results are stored under this name.
            let name = match &args.name {
                Some(lit) => quote!(#lit),
                None => {
                    let fn_name = ident.to_string();
                    let fn_name = fn_name.strip_prefix("r#").unwrap_or(&fn_name).to_owned();
                    quote!(#fn_name)
                }
            };
            if let (Some(old), Some(current)) = (&args.renamed_from, &args.name) {
                if old.value() == current.value() {
                    return with_errors(
                        item,
                        syn::Error::new_spanned(old, "`renamed_from` must differ from `name`"),
                    );
                }
            }
            let renamed_from = match &args.renamed_from {
                Some(lit) => quote!(::core::option::Option::Some(#lit)),
                None => quote!(::core::option::Option::None),
            };
            let max_attempts = match args.max_attempts {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            let timeout = match args.timeout {
                Some(d) => {
                    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    quote!(::core::option::Option::Some(#krate::__private::Duration::from_millis(#ms)))
                }
                None => quote!(::core::option::Option::None),
            };
            // Each parameter after the event is built from the context through `HandlerArg`: a type
            // that is neither `HandlerContext` nor `State<T>` fails to compile there, on its span.
            let arg_names: Vec<_> = (0..shape.extra.len())
                .map(|i| format_ident!("__outbox_arg_{}", i))
                .collect();
            let arg_lets = shape.extra.iter().zip(&arg_names).map(|(ty, name)| {
                quote_spanned! {ty.span()=>
                    let #name = <#ty as #krate::HandlerArg>::from_context(&ctx)?;
                }
            });
            let arg_requirements = shape.extra.iter().map(|ty| {
                quote_spanned! {ty.span()=> <#ty as #krate::HandlerArg>::required_state() }
            });
            let n_extra = shape.extra.len();
            let call = format_ident!("__outbox_call_{}", ident);
            let declared = format_ident!("__outbox_declared_{}", ident);
            let required = format_ident!("__outbox_required_state_{}", ident);
            quote! {
                #item_fn

                #[doc(hidden)]
                #[allow(non_snake_case, clippy::used_underscore_binding)]
                const _: () = {
                    fn #call(
                        record: #krate::__private::Arc<#krate::EventRecord>,
                        ctx: #krate::HandlerContext,
                    ) -> #krate::HandlerFuture {
                        ::std::boxed::Box::pin(async move {
                            let event = <#event_ty as #krate::HandlerInput>::from_record(&record)?;
                            #(#arg_lets)*
                            #[allow(unused_variables)]
                            let ctx = ctx;
                            #krate::__private::into_handler_result(#ident(event #(, #arg_names)*).await)
                        })
                    }
                    fn #declared() -> ::core::option::Option<&'static str> {
                        <#event_ty as #krate::HandlerInput>::declared_event_type()
                    }
                    fn #required() -> ::std::vec::Vec<#krate::StateRequirement> {
                        let all: [::core::option::Option<#krate::StateRequirement>; #n_extra] = [#(#arg_requirements),*];
                        all.into_iter().flatten().collect()
                    }
                    #krate::__private::inventory::submit! {
                        #krate::HandlerRegistration {
                            event_type: #event,
                            name: #name,
                            max_attempts: #max_attempts,
                            timeout: #timeout,
                            location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                            call: #call,
                            declared_event_type: #declared,
                            renamed_from: #renamed_from,
                            required_state: #required,
                        }
                    }
                };
            }
        }
        (Some(err), _, _) => with_errors(item, err),
        _ => item,
    }
}

/// The item unchanged (so IDEs keep working) followed by the compile errors.
fn with_errors(item: TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.to_compile_error();
    quote!(#item #errors)
}
