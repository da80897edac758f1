//! Code generation for `#[handler]`: the original function, plus a registration wrapped in
//! `const _: () = { … };` that reaches support crates only through `outbox_core::__private`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, Path};

use crate::handler_attr::{HandlerArgs, HandlerFn, batch_element, check_fn, transaction_param};

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
    let mut shape = match check_fn(&item_fn) {
        Ok(shape) => Some(shape),
        Err(err) => {
            combine(&mut errors, err);
            None
        }
    };
    for err in shape_problems(&args, shape.as_mut()) {
        combine(&mut errors, err);
    }
    match (errors, shape) {
        (None, Some(shape)) => match registration(&args, &item_fn, &shape) {
            Ok(tokens) => tokens,
            Err(err) => with_errors(item, err),
        },
        (Some(err), _) => with_errors(item, err),
        _ => item,
    }
}

/// Adds `err` to the errors collected so far.
fn combine(errors: &mut Option<syn::Error>, err: syn::Error) {
    match errors {
        Some(e) => e.combine(err),
        None => *errors = Some(err),
    }
}

/// What the attribute's options say about the function's shape: a batch handler's element type
/// (written into `shape`), and every option that does not fit the parameters.
fn shape_problems(args: &HandlerArgs, mut shape: Option<&mut HandlerFn<'_>>) -> Vec<syn::Error> {
    // A batch handler takes `Vec<event>` and nothing else; its event type is the element's.
    let mut batch_problems: Vec<syn::Error> = Vec::new();
    if let (Some((_, lit)), None) = (&args.linger, args.batch) {
        batch_problems.push(syn::Error::new_spanned(
            lit,
            "`linger` applies to batch handlers: add `batch = N`",
        ));
    }
    if let (Some(_), Some(s)) = (args.batch, shape.as_deref_mut()) {
        match batch_element(s.event_type) {
            Ok(element) => s.event_type = element,
            Err(err) => batch_problems.push(err),
        }
        if let Some(first) = s.extra.first() {
            batch_problems.push(syn::Error::new_spanned(
                first,
                "a batch handler takes only its `Vec` of events (each event's context is not one value)",
            ));
        }
    }
    // A transactional handler takes exactly one `&mut Tx` parameter after the event; a `&mut`
    // parameter is only allowed on one.
    if let Some(s) = shape.as_deref() {
        let tx_params: Vec<_> = s
            .extra
            .iter()
            .filter(|ty| transaction_param(ty).is_some())
            .collect();
        match (&args.transactional, tx_params.as_slice()) {
            (Some(_), [_]) | (None, []) => {}
            (Some(flag), []) => batch_problems.push(syn::Error::new_spanned(
                flag,
                "a `transactional` handler takes its store's transaction after the event, e.g. `tx: &mut outbox_postgres::PgTx`",
            )),
            (Some(_), [_, second, ..]) => batch_problems.push(syn::Error::new_spanned(
                second,
                "a transactional handler runs in one transaction: take one `&mut` transaction parameter",
            )),
            (None, [first, ..]) => batch_problems.push(syn::Error::new_spanned(
                first,
                "a `&mut` parameter is a store transaction: add `transactional` to #[handler] to run the handler in it",
            )),
        }
        if let (Some(flag), Some(_)) = (&args.transactional, args.batch) {
            batch_problems.push(syn::Error::new_spanned(
                flag,
                "a batch handler cannot be `transactional`: its events finish one by one",
            ));
        }
    }
    batch_problems
}

/// The function unchanged, and its registration: the call wrapper, the event type and its
/// compile-time check, the options, all submitted to `inventory`.
fn registration(
    args: &HandlerArgs,
    item_fn: &ItemFn,
    shape: &HandlerFn<'_>,
) -> Result<TokenStream, syn::Error> {
    let krate: Path = args
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::outbox_core));
    let ident = &item_fn.sig.ident;
    let event_ty = shape.event_type;
    let (event, event_check) = event_type(args, event_ty, &krate);
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
            return Err(syn::Error::new_spanned(
                old,
                "`renamed_from` must differ from `name`",
            ));
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
    let CallWrapper {
        call,
        call_fn,
        tx_ty,
        arg_requirements,
        n_extra,
    } = call_wrapper(args, item_fn, shape, &krate);
    let transaction = match tx_ty {
        Some(tx_ty) => quote_spanned! {tx_ty.span()=>
            #krate::__private::transaction_type::<#tx_ty>()
        },
        None => quote!(::core::option::Option::None),
    };
    let declared = format_ident!("__outbox_declared_{}", ident);
    let required = format_ident!("__outbox_required_state_{}", ident);
    let transaction_fn = format_ident!("__outbox_transaction_{}", ident);
    Ok(quote! {
        #item_fn

        #[doc(hidden)]
        #[allow(non_snake_case, clippy::used_underscore_binding)]
        const _: () = {
            #event_check
            #call_fn
            fn #declared() -> ::core::option::Option<&'static str> {
                <#event_ty as #krate::__private::HandlerInput>::declared_event_type()
            }
            fn #required() -> ::std::vec::Vec<#krate::__private::StateRequirement> {
                let all: [::core::option::Option<#krate::__private::StateRequirement>; #n_extra] = [#(#arg_requirements),*];
                all.into_iter().flatten().collect()
            }
            fn #transaction_fn() -> ::core::option::Option<#krate::__private::TransactionType> {
                #transaction
            }
            #krate::__private::inventory::submit! {
                #krate::__private::HandlerRegistration {
                    event_type: #event,
                    name: #name,
                    max_attempts: #max_attempts,
                    timeout: #timeout,
                    location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                    call: #call,
                    declared_event_type: #declared,
                    renamed_from: #renamed_from,
                    required_state: #required,
                    transaction: #transaction_fn,
                }
            }
        };
    })
}

/// The event type the handler is registered for, and the compile-time check that it agrees with
/// the event parameter.
fn event_type(
    args: &HandlerArgs,
    event_ty: &syn::Type,
    krate: &Path,
) -> (TokenStream, TokenStream) {
    // The event type: `event = "…"`, checked against a typed parameter's `Event` type at
    // compile time; or, when omitted, the typed parameter's (a raw record then fails to
    // compile, asking for `event`). Both are constants, spanned on what they come from.
    match &args.event {
        Some(lit) => (
            quote!(#lit),
            quote_spanned! {lit.span()=>
                const _: () = ::core::assert!(
                    #krate::__private::event_type_agrees(
                        <#event_ty as #krate::__private::HandlerInput>::EVENT_TYPE,
                        #lit,
                    ),
                    "`event = \"…\"` differs from the `Event` type of the handler's event parameter: remove `event` or make them agree",
                );
            },
        ),
        None => (
            quote! {
                #krate::__private::event_type_of(
                    <#event_ty as #krate::__private::HandlerInput>::EVENT_TYPE
                )
            },
            quote_spanned! {event_ty.span()=>
                const _: () = ::core::assert!(
                    <#event_ty as #krate::__private::HandlerInput>::EVENT_TYPE.is_some(),
                    "this handler's event parameter is a raw record, which names no event type: add `event = \"EventType\"` to #[handler]",
                );
            },
        ),
    }
}

/// The handler's call wrapper and what it needs from the context.
struct CallWrapper<'a> {
    /// The wrapper's name.
    call: syn::Ident,
    /// The wrapper (and, for a batch handler, its batch function).
    call_fn: TokenStream,
    /// A transactional handler's transaction type.
    tx_ty: Option<&'a syn::Type>,
    /// The state each parameter after the event requires.
    arg_requirements: Vec<TokenStream>,
    /// How many parameters after the event are built from the context.
    n_extra: usize,
}

/// The wrapper that decodes the event, builds the other parameters from the context, calls the
/// function (through a batcher for a batch handler, in a transaction for a transactional one) and
/// turns what it returns into a handler result.
// Long by design: two generated bodies (batch and single) are `quote!` templates that read as the
// code they produce.
fn call_wrapper<'a>(
    args: &HandlerArgs,
    item_fn: &ItemFn,
    shape: &HandlerFn<'a>,
    krate: &Path,
) -> CallWrapper<'a> {
    let ident = &item_fn.sig.ident;
    let event_ty = shape.event_type;
    // Each parameter after the event is built from the context through `HandlerArg`: a type
    // that is neither `HandlerContext` nor `State<T>` fails to compile there, on its span.
    let arg_names: Vec<_> = (0..shape.extra.len())
        .map(|i| format_ident!("__outbox_arg_{}", i))
        .collect();
    // A transactional handler's `&mut Tx` parameter is the transaction the call runs in.
    let tx_ty = shape.extra.iter().find_map(|ty| transaction_param(ty));
    let arg_exprs: Vec<_> = shape
        .extra
        .iter()
        .zip(&arg_names)
        .map(|(ty, name)| match transaction_param(ty) {
            Some(_) => quote!(&mut __outbox_tx),
            None => quote!(#name),
        })
        .collect();
    let arg_lets = shape
        .extra
        .iter()
        .zip(&arg_names)
        .filter(|(ty, _)| transaction_param(ty).is_none())
        .map(|(ty, name)| {
            quote_spanned! {ty.span()=>
                let #name = <#ty as #krate::__private::HandlerArg>::from_context(&__outbox_ctx)?;
            }
        });
    let state_params: Vec<_> = shape
        .extra
        .iter()
        .filter(|ty| transaction_param(ty).is_none())
        .collect();
    let arg_requirements: Vec<TokenStream> = state_params
        .iter()
        .map(|ty| {
            quote_spanned! {ty.span()=> <#ty as #krate::__private::HandlerArg>::required_state() }
        })
        .collect();
    let n_extra = state_params.len();
    // Spanned on the declared return type, so a wrong one is reported there.
    let into_result = match &item_fn.sig.output {
        syn::ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::IntoHandlerResult>::into_handler_result(__outbox_returned)
        },
        syn::ReturnType::Default => quote! {
            #krate::__private::IntoHandlerResult::into_handler_result(__outbox_returned)
        },
    };
    let call = format_ident!("__outbox_call_{}", ident);
    let batch_fn = format_ident!("__outbox_batch_{}", ident);
    let call_fn = match args.batch {
        Some(max) => {
            let linger_ms = args.linger.as_ref().map_or(10, |(d, _)| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            });
            // Spanned on the declared return type, so a wrong one is reported there.
            let check_return = match &item_fn.sig.output {
                syn::ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
                    const _: fn() = || {
                        fn returns<R: #krate::__private::IntoBatchResults>() {}
                        returns::<#ty>();
                    };
                },
                syn::ReturnType::Default => quote!(),
            };
            quote! {
                #check_return
                fn #batch_fn(items: ::std::vec::Vec<#krate::__private::BatchItem>) -> #krate::__private::BatchFuture {
                    ::std::boxed::Box::pin(#krate::__private::run_batch::<#event_ty, _, _>(items, #ident))
                }
                fn #call(
                    __outbox_record: #krate::__private::Arc<#krate::EventRecord>,
                    __outbox_ctx: #krate::HandlerContext,
                ) -> #krate::__private::HandlerFuture {
                    static BATCHER: #krate::__private::BatchCell = #krate::__private::BatchCell::new();
                    BATCHER.call(#max, #linger_ms, #batch_fn, __outbox_record, __outbox_ctx)
                }
            }
        }
        None => {
            // A transactional handler begins its transaction before the call, then records
            // its success in it (fenced by the lease) and commits — or rolls back.
            let (begin, result) = match tx_ty {
                None => (quote!(), into_result.clone()),
                Some(tx_ty) => (
                    quote! {
                        let (mut __outbox_tx, __outbox_guard) = #krate::__private::begin_transaction::<#tx_ty>(&__outbox_ctx).await?;
                    },
                    quote! {
                        #krate::__private::finish_transaction(&__outbox_ctx, (__outbox_tx, __outbox_guard), #into_result).await
                    },
                ),
            };
            quote! {
                fn #call(
                    __outbox_record: #krate::__private::Arc<#krate::EventRecord>,
                    __outbox_ctx: #krate::HandlerContext,
                ) -> #krate::__private::HandlerFuture {
                    ::std::boxed::Box::pin(async move {
                        let __outbox_event = <#event_ty as #krate::__private::HandlerInput>::from_record(&__outbox_record)?;
                        #(#arg_lets)*
                        #begin
                        let __outbox_returned = #ident(__outbox_event #(, #arg_exprs)*).await;
                        #result
                    })
                }
            }
        }
    };
    CallWrapper {
        call,
        call_fn,
        tx_ty,
        arg_requirements,
        n_extra,
    }
}

/// The item unchanged (so IDEs keep working) followed by the compile errors.
fn with_errors(item: TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.to_compile_error();
    quote!(#item #errors)
}
