//! Parsing and checking of `#[handler(...)]` and the function it is placed on.

use std::time::Duration;

use syn::{FnArg, ItemFn, LitInt, LitStr, Path, Type};

const OPTIONS: &str = "`event`, `name`, `renamed_from`, `max_attempts`, `timeout`, `batch`, `linger`, \
     `transactional`, `crate`";

/// The options of one `#[handler(...)]`.
#[derive(Default)]
pub(crate) struct HandlerArgs {
    pub(crate) event: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) renamed_from: Option<LitStr>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    /// `batch = N`: the function takes `Vec<event>` and handles up to N events per call.
    pub(crate) batch: Option<usize>,
    /// `linger = "10ms"`: how long a batch waits to fill.
    pub(crate) linger: Option<(Duration, LitStr)>,
    /// `transactional`: the function takes `&mut` of a store transaction and runs in it (X1).
    pub(crate) transactional: Option<syn::Path>,
    pub(crate) krate: Option<Path>,
}

impl HandlerArgs {
    /// Parses one `key = value` of the attribute.
    pub(crate) fn parse_option(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "event" => {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(&lit, "`event` must not be empty"));
                }
                set_once(&mut self.event, lit, &meta)
            }
            "name" => {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(&lit, "`name` must not be empty"));
                }
                set_once(&mut self.name, lit, &meta)
            }
            "renamed_from" => {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "`renamed_from` must not be empty",
                    ));
                }
                set_once(&mut self.renamed_from, lit, &meta)
            }
            "max_attempts" => {
                let lit: LitInt = meta.value()?.parse()?;
                let n: u32 = lit.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "`max_attempts` must be at least 1",
                    ));
                }
                set_once(&mut self.max_attempts, n, &meta)
            }
            "timeout" => {
                let lit: LitStr = meta.value()?.parse()?;
                let timeout = parse_duration(&lit.value()).ok_or_else(|| {
                    syn::Error::new_spanned(
                        &lit,
                        "`timeout` must be a positive duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"",
                    )
                })?;
                set_once(&mut self.timeout, timeout, &meta)
            }
            "batch" => {
                let lit: LitInt = meta.value()?.parse()?;
                let n: usize = lit.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(&lit, "`batch` must be at least 1"));
                }
                set_once(&mut self.batch, n, &meta)
            }
            "linger" => {
                let lit: LitStr = meta.value()?.parse()?;
                let linger = parse_duration(&lit.value()).ok_or_else(|| {
                    syn::Error::new_spanned(
                        &lit,
                        "`linger` must be a positive duration such as \"5ms\" or \"1s\"",
                    )
                })?;
                set_once(&mut self.linger, (linger, lit), &meta)
            }
            "transactional" => {
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    return Err(meta.error(
                        "`transactional` takes no value: write `#[handler(event = \"…\", transactional)]`",
                    ));
                }
                set_once(&mut self.transactional, meta.path.clone(), &meta)
            }
            "crate" => {
                let lit: LitStr = meta.value()?.parse()?;
                let path: Path = lit.parse()?;
                set_once(&mut self.krate, path, &meta)
            }
            _ => Err(meta.error(format_args!(
                "unknown option `{key}`; expected one of {OPTIONS}"
            ))),
        }
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error("this option is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses "500ms", "30s", "5m", "1h" into a positive duration.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// What the expansion needs from the function.
pub(crate) struct HandlerFn<'a> {
    pub(crate) event_type: &'a Type,
    /// The parameters after the event (`HandlerContext`, `State<T>`), in order.
    pub(crate) extra: Vec<&'a Type>,
}

/// Checks the function's shape, collecting every problem.
pub(crate) fn check_fn(item: &ItemFn) -> Result<HandlerFn<'_>, syn::Error> {
    let sig = &item.sig;
    let mut errors: Vec<syn::Error> = Vec::new();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "a handler must be an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a handler cannot be generic",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "a handler cannot be variadic",
        ));
    }
    if let syn::ReturnType::Default = sig.output {
        errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            "a handler returns `Result<(), HandlerError>` (or a `Result` with a JSON value or its own \
             error type): add `-> Result<(), HandlerError>` and end with `Ok(())`",
        ));
    }
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                r,
                "a handler is a free function: it cannot take `self`",
            )),
            FnArg::Typed(pat) => types.push(&*pat.ty),
        }
    }
    let shape = "a handler takes the event first (a type deriving `Event`, or `EventRecord`), then \
                 any of `ctx: HandlerContext` and `State<T>` parameters";
    if types.is_empty() && !sig.inputs.iter().any(|a| matches!(a, FnArg::Receiver(_))) {
        errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("missing event parameter: {shape}"),
        ));
    }
    if let Some(err) = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        return Err(err);
    }
    Ok(HandlerFn {
        event_type: types[0],
        extra: types[1..].to_vec(),
    })
}

/// The transaction type `T` of a `&mut T` parameter, if `ty` is one.
pub(crate) fn transaction_param(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(r) if r.mutability.is_some() => Some(&r.elem),
        _ => None,
    }
}

/// The element type of a batch handler's `Vec<T>` parameter.
pub(crate) fn batch_element(ty: &Type) -> Result<&Type, syn::Error> {
    if let Type::Path(path) = ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident == "Vec" {
                if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(syn::GenericArgument::Type(inner)) = args.args.first() {
                        return Ok(inner);
                    }
                }
            }
        }
    }
    Err(syn::Error::new_spanned(
        ty,
        "a batch handler (`batch = N`) takes `Vec<Event>` (or `Vec<EventRecord>`): the events of one batch",
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5 days"), None);
    }
}
