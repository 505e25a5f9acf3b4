//! Parsing the arguments of `#[traced(...)]`. Parsing never generates code.
//!
//! Mistakes that leave the argument list readable (an unknown or duplicate
//! option, conflicting options, a `name`/`type`/`crate` that is not a string,
//! a `crate` that is not a path) are collected in [`Errors`] and parsing goes
//! on, so one compile reports them all. Only a syntax error that makes the
//! rest unreadable stops it. Which span type names exist is not known here:
//! the compiler checks them against core's `SpanType::ALL`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitStr, Path, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(skip_all);
    syn::custom_keyword!(input);
    syn::custom_keyword!(no_output);
    syn::custom_keyword!(notrace_io);
    syn::custom_keyword!(metadata);
    syn::custom_keyword!(output);
}

/// Every option, for the "unknown option" message.
const OPTIONS: &str =
    "name, type, skip, skip_all, input, no_output, notrace_io, metadata, output, crate";

/// Collects errors; refuses to be dropped unchecked (as serde_derive's
/// `Ctxt`), so no error can be forgotten.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Option<Vec<syn::Error>>,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Errors {
            errors: Some(Vec::new()),
        }
    }

    pub(crate) fn push(&mut self, e: syn::Error) {
        if let Some(v) = &mut self.errors {
            v.push(e);
        }
    }

    pub(crate) fn error(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Consumes the collector: all errors combined into one, if any.
    pub(crate) fn check(mut self) -> Result<(), syn::Error> {
        let errors = self.errors.take().unwrap_or_default();
        let mut iter = errors.into_iter();
        match iter.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in iter {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!("braintrust-macros bug: `Errors` dropped without being checked");
        }
    }
}

/// A list of parameter names given to `skip(...)` or `input(...)`.
pub(crate) struct NameList {
    pub(crate) names: Vec<Ident>,
}

/// The parsed arguments of `#[traced(...)]`.
pub(crate) struct TracedArgs {
    /// `name = "..."`.
    pub(crate) name: Option<LitStr>,
    /// `type = "..."`: the span type's wire name, checked against
    /// `SpanType::ALL` by the compiler (see `expand::span_type`).
    pub(crate) span_type: Option<LitStr>,
    /// `skip(a, b)`.
    pub(crate) skip: Option<NameList>,
    /// `skip_all`.
    pub(crate) skip_all: Option<Span>,
    /// `input(a, b)`.
    pub(crate) input: Option<NameList>,
    /// `no_output`.
    pub(crate) no_output: Option<Span>,
    /// `notrace_io`.
    pub(crate) notrace_io: Option<Span>,
    /// `metadata = <expr>`.
    pub(crate) metadata: Option<Expr>,
    /// `output = <closure or function>`: what to log instead of the return value.
    pub(crate) output: Option<Expr>,
    /// `crate = "path"`: where the `braintrust` crate is (a renamed dependency).
    pub(crate) krate: Option<Path>,
    /// Mistakes found while parsing; checked by the caller.
    pub(crate) errors: Errors,
    /// The options in the order written (for conflict messages).
    seen: Vec<(&'static str, Span)>,
}

/// Which arguments go into `input`.
pub(crate) enum InputMode<'a> {
    /// Every argument except these (and `self`).
    AllExcept(&'a [Ident]),
    /// Only these.
    Only(&'a [Ident]),
    /// None: no `input` is logged.
    Nothing,
}

impl TracedArgs {
    pub(crate) fn input_mode(&self) -> InputMode<'_> {
        if self.skip_all.is_some() || self.notrace_io.is_some() {
            InputMode::Nothing
        } else if let Some(only) = &self.input {
            InputMode::Only(&only.names)
        } else if let Some(skip) = &self.skip {
            InputMode::AllExcept(&skip.names)
        } else {
            InputMode::AllExcept(&[])
        }
    }

    /// The path of the `braintrust` crate: `crate = "..."`, or `::braintrust`.
    pub(crate) fn krate(&self) -> Path {
        self.krate
            .clone()
            .unwrap_or_else(|| syn::parse_quote!(::braintrust))
    }

    pub(crate) fn logs_output(&self) -> bool {
        self.no_output.is_none() && self.notrace_io.is_none()
    }

    /// The parameter names the options refer to, for checking against the
    /// function's signature.
    pub(crate) fn named_params(&self) -> impl Iterator<Item = &Ident> {
        let skip = self.skip.iter().flat_map(|l| l.names.iter());
        let input = self.input.iter().flat_map(|l| l.names.iter());
        skip.chain(input)
    }

    /// Of two options written, the span of the one written second, so the
    /// message points at the one to remove.
    fn later(&self, a: &str, b: &str) -> Span {
        let pos = |name: &str| self.seen.iter().position(|(n, _)| *n == name);
        match (pos(a), pos(b)) {
            (Some(i), Some(j)) => self.seen[i.max(j)].1,
            (Some(i), None) | (None, Some(i)) => self.seen[i].1,
            (None, None) => Span::call_site(),
        }
    }

    fn check_conflicts(&mut self) {
        let mut found: Vec<(Span, String)> = Vec::new();
        let has = |name: &str| self.seen.iter().any(|(n, _)| *n == name);
        if has("skip_all") && has("skip") {
            found.push((
                self.later("skip_all", "skip"),
                "`skip_all` and `skip(...)` cannot be used together: `skip_all` already skips every argument".into(),
            ));
        }
        if has("input") && has("skip") {
            found.push((
                self.later("input", "skip"),
                "`input(...)` and `skip(...)` cannot be used together: `input(...)` already lists the only arguments logged".into(),
            ));
        }
        if has("input") && has("skip_all") {
            found.push((
                self.later("input", "skip_all"),
                "`input(...)` and `skip_all` cannot be used together".into(),
            ));
        }
        for (other, shown) in [("no_output", "no_output"), ("notrace_io", "notrace_io")] {
            if has("output") && has(other) {
                found.push((
                    self.later("output", other),
                    format!(
                        "`output = ...` and `{shown}` cannot be used together: `{shown}` logs no output"
                    ),
                ));
            }
        }
        if has("notrace_io") {
            for (other, shown) in [
                ("skip_all", "skip_all"),
                ("skip", "skip(...)"),
                ("input", "input(...)"),
                ("no_output", "no_output"),
            ] {
                if has(other) {
                    found.push((
                        self.later("notrace_io", other),
                        format!(
                            "`notrace_io` and `{shown}` cannot be used together: `notrace_io` already logs neither input nor output"
                        ),
                    ));
                }
            }
        }
        for (span, message) in found {
            self.errors.error(span, message);
        }
    }
}

fn duplicate(errors: &mut Errors, span: Span, option: &str) {
    errors.error(span, format!("expected only a single `{option}` argument"));
}

/// Parses `(a, b, ...)` after `skip` / `input`.
fn parse_names(input: ParseStream, option: &str, errors: &mut Errors) -> syn::Result<Vec<Ident>> {
    let content;
    let parens = syn::parenthesized!(content in input);
    let list: Punctuated<Ident, Token![,]> =
        content.parse_terminated(Ident::parse_any, Token![,])?;
    if list.is_empty() {
        errors.error(
            parens.span.join(),
            format!("`{option}(...)` needs at least one parameter name"),
        );
    }
    let mut names: Vec<Ident> = Vec::new();
    for name in list {
        if names.iter().any(|n| n.unraw() == name.unraw()) {
            errors.error(name.span(), format!("`{}` is listed twice", name.unraw()));
        } else {
            names.push(name);
        }
    }
    Ok(names)
}

/// Parses `= "literal"` and returns the literal, or records an error at the
/// value when it is not a string literal.
fn parse_str_value(
    input: ParseStream,
    option: &str,
    errors: &mut Errors,
) -> syn::Result<Option<LitStr>> {
    input.parse::<Token![=]>()?;
    let value: Expr = input.parse()?;
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(Some(s)),
        other => {
            let example = match option {
                "type" => "llm",
                "crate" => "my_braintrust",
                _ => "...",
            };
            errors.error(
                other.span(),
                format!("`{option}` must be a string literal, e.g. `{option} = \"{example}\"`"),
            );
            Ok(None)
        }
    }
}

/// Skips what follows an unknown option: `= <expr>` or `(...)`.
fn skip_value(input: ParseStream) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse::<Expr>()?;
    } else if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        content.parse::<proc_macro2::TokenStream>()?;
    }
    Ok(())
}

impl Parse for TracedArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = TracedArgs {
            name: None,
            span_type: None,
            skip: None,
            skip_all: None,
            input: None,
            no_output: None,
            notrace_io: None,
            metadata: None,
            output: None,
            krate: None,
            errors: Errors::new(),
            seen: Vec::new(),
        };
        match parse_options(input, &mut args) {
            Ok(()) => {
                args.check_conflicts();
                Ok(args)
            }
            Err(e) => {
                // Report what was found before the syntax error too.
                let earlier = std::mem::take(&mut args.errors);
                match earlier.check() {
                    Ok(()) => Err(e),
                    Err(mut all) => {
                        all.combine(e);
                        Err(all)
                    }
                }
            }
        }
    }
}

fn parse_options(input: ParseStream, args: &mut TracedArgs) -> syn::Result<()> {
    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::name) {
            let kw: kw::name = input.parse()?;
            args.seen.push(("name", kw.span));
            let value = parse_str_value(input, "name", &mut args.errors)?;
            if args.name.is_some() {
                duplicate(&mut args.errors, kw.span, "name");
            } else if let Some(v) = value {
                if v.value().is_empty() {
                    args.errors.error(v.span(), "`name` must not be empty");
                }
                args.name = Some(v);
            }
        } else if lookahead.peek(Token![type]) {
            let kw: Token![type] = input.parse()?;
            args.seen.push(("type", kw.span));
            let value = parse_str_value(input, "type", &mut args.errors)?;
            if args.span_type.is_some() {
                duplicate(&mut args.errors, kw.span, "type");
            } else if value.is_some() {
                args.span_type = value;
            }
        } else if lookahead.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            args.seen.push(("crate", kw.span));
            let value = parse_str_value(input, "crate", &mut args.errors)?;
            if args.krate.is_some() {
                duplicate(&mut args.errors, kw.span, "crate");
            } else if let Some(v) = value {
                match v.parse_with(Path::parse_mod_style) {
                    Ok(path) => args.krate = Some(path),
                    Err(e) => args.errors.error(
                        v.span(),
                        format!(
                            "`crate` must be the path of the `braintrust` crate, e.g. `crate = \"my_braintrust\"`: {e}"
                        ),
                    ),
                }
            }
        } else if lookahead.peek(kw::skip_all) {
            let kw: kw::skip_all = input.parse()?;
            args.seen.push(("skip_all", kw.span));
            if args.skip_all.is_some() {
                duplicate(&mut args.errors, kw.span, "skip_all");
            }
            args.skip_all = Some(kw.span);
        } else if lookahead.peek(kw::skip) {
            let kw: kw::skip = input.parse()?;
            args.seen.push(("skip", kw.span));
            let names = parse_names(input, "skip", &mut args.errors)?;
            if args.skip.is_some() {
                duplicate(&mut args.errors, kw.span, "skip");
            } else {
                args.skip = Some(NameList { names });
            }
        } else if lookahead.peek(kw::input) {
            let kw: kw::input = input.parse()?;
            args.seen.push(("input", kw.span));
            let names = parse_names(input, "input", &mut args.errors)?;
            if args.input.is_some() {
                duplicate(&mut args.errors, kw.span, "input");
            } else {
                args.input = Some(NameList { names });
            }
        } else if lookahead.peek(kw::no_output) {
            let kw: kw::no_output = input.parse()?;
            args.seen.push(("no_output", kw.span));
            if args.no_output.is_some() {
                duplicate(&mut args.errors, kw.span, "no_output");
            }
            args.no_output = Some(kw.span);
        } else if lookahead.peek(kw::notrace_io) {
            let kw: kw::notrace_io = input.parse()?;
            args.seen.push(("notrace_io", kw.span));
            if args.notrace_io.is_some() {
                duplicate(&mut args.errors, kw.span, "notrace_io");
            }
            args.notrace_io = Some(kw.span);
        } else if lookahead.peek(kw::metadata) {
            let kw: kw::metadata = input.parse()?;
            args.seen.push(("metadata", kw.span));
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            if args.metadata.is_some() {
                duplicate(&mut args.errors, kw.span, "metadata");
            } else {
                args.metadata = Some(value);
            }
        } else if lookahead.peek(kw::output) {
            let kw: kw::output = input.parse()?;
            args.seen.push(("output", kw.span));
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            if let Expr::Closure(c) = &value
                && c.inputs.len() != 1
            {
                let at = if c.inputs.is_empty() {
                    c.span()
                } else {
                    c.inputs.span()
                };
                args.errors.error(
                    at,
                    "`output = |...| ...` takes one argument: a reference to the return value (the `Ok` value of a `Result`), e.g. `output = |r| &r.0`",
                );
            }
            if args.output.is_some() {
                duplicate(&mut args.errors, kw.span, "output");
            } else {
                args.output = Some(value);
            }
        } else if input.peek(Ident::peek_any) {
            let unknown = input.call(Ident::parse_any)?;
            args.errors.error(
                unknown.span(),
                format!("unknown option `{unknown}`; expected one of: {OPTIONS}"),
            );
            skip_value(input)?;
        } else {
            return Err(lookahead.error());
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TracedArgs, String> {
        syn::parse_str::<TracedArgs>(s).map_err(|e| {
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        })
    }

    fn errors(s: &str) -> String {
        match parse(s) {
            Ok(a) => match a.errors.check() {
                Ok(()) => String::new(),
                Err(e) => e
                    .into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            },
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_every_form() {
        let a = parse(r#"type = "llm", name = "Custom LLM", skip(client, r#type), no_output, metadata = json!({"a": 1}),"#).unwrap();
        assert_eq!(a.name.as_ref().unwrap().value(), "Custom LLM");
        assert_eq!(a.span_type.as_ref().unwrap().value(), "llm");
        assert_eq!(a.skip.as_ref().unwrap().names.len(), 2);
        assert!(!a.logs_output());
        assert!(a.metadata.is_some());
        a.errors.check().unwrap();
        assert_eq!(errors(""), "");
        assert_eq!(errors("skip_all"), "");
        assert_eq!(errors("notrace_io"), "");
        assert_eq!(errors("input(a, b)"), "");
        // Span types are checked by the compiler against `SpanType::ALL`.
        assert_eq!(errors(r#"type = "model""#), "");
        let a = parse(r#"crate = "::my_bt::reexported""#).unwrap();
        let krate = a.krate.as_ref().unwrap();
        assert!(krate.leading_colon.is_some());
        assert_eq!(krate.segments.len(), 2);
        a.errors.check().unwrap();
    }

    #[test]
    fn reports_every_mistake() {
        assert_eq!(
            errors("foo = 1, name = 2"),
            "unknown option `foo`; expected one of: name, type, skip, skip_all, input, no_output, notrace_io, metadata, output, crate | `name` must be a string literal, e.g. `name = \"...\"`"
        );
        assert_eq!(
            errors("skip_all, skip_all"),
            "expected only a single `skip_all` argument"
        );
        assert_eq!(
            errors("type = llm"),
            "`type` must be a string literal, e.g. `type = \"llm\"`"
        );
        assert_eq!(
            errors("crate = my_bt"),
            "`crate` must be a string literal, e.g. `crate = \"my_braintrust\"`"
        );
        assert!(errors(r#"crate = "my bt""#)
            .starts_with("`crate` must be the path of the `braintrust` crate, e.g. `crate = \"my_braintrust\"`: "));
        assert!(errors(r#"crate = """#).starts_with("`crate` must be the path"));
        assert!(errors(r#"crate = "a<b>""#).starts_with("`crate` must be the path"));
        assert_eq!(
            errors(r#"crate = "a", crate = "b""#),
            "expected only a single `crate` argument"
        );
        assert!(errors("skip(a), skip_all").starts_with("`skip_all` and `skip(...)` cannot"));
        assert!(errors("notrace_io, no_output").starts_with("`notrace_io` and `no_output`"));
        assert!(errors("input(a), skip(b)").starts_with("`input(...)` and `skip(...)`"));
        assert!(errors("output = |r| r.0, no_output").starts_with("`output = ...` and `no_output`"));
        assert!(errors("notrace_io, output = f").starts_with("`output = ...` and `notrace_io`"));
        assert!(errors("output = |a, b| a").starts_with("`output = |...| ...` takes one argument"));
        assert_eq!(
            errors("output = f, output = g"),
            "expected only a single `output` argument"
        );
        assert_eq!(errors("skip(a, a)"), "`a` is listed twice");
        assert_eq!(
            errors("skip()"),
            "`skip(...)` needs at least one parameter name"
        );
        assert!(errors(r#"name = "a" name = "b""#).starts_with("expected `,`"));
    }
}
