//! Generating the traced function. Generation never parses arguments; the
//! code it emits calls the runtime only through paths under the `braintrust`
//! crate (`::braintrust`, or the `crate = "..."` path) and holds no
//! behaviour of its own.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    AttrStyle, Attribute, Block, Expr, ExprAsync, ExprCall, FnArg, Ident, Item, ItemFn, LitStr,
    Pat, ReturnType, Signature, Stmt, Token, Type, TypeParamBound, Visibility,
};

use crate::attr::{Errors, InputMode, TracedArgs};

/// Entry point: the traced function, or the original item and the errors.
pub(crate) fn traced(mut args: TracedArgs, item: TokenStream) -> TokenStream {
    let mut errors = std::mem::take(&mut args.errors);
    // A full parse first; if the body does not parse, the signature only,
    // passing the body through so rustc reports the user's syntax error.
    let parts = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => FnParts::from(f),
        Err(full_error) => match syn::parse2::<MaybeItemFn>(item.clone()) {
            Ok(f) => f.into_parts(),
            Err(e) => {
                errors.push(not_a_function(&item, full_error, e));
                return with_errors(item, errors);
            }
        },
    };
    if let Some(c) = &parts.sig.constness {
        errors.error(
            c.span,
            "`#[traced]` cannot be used on a `const fn`: spans are started at run time",
        );
    }
    let params = param_names(&parts.sig);
    check_named_params(&args, &params, &mut errors);
    match errors.check() {
        Ok(()) => gen_function(&args, parts, &params),
        Err(e) => with_error(item, e),
    }
}

/// The original item unchanged, plus the errors, so a mistake in the
/// attribute causes no follow-on errors about the function.
fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    match errors.check() {
        Ok(()) => item,
        Err(e) => with_error(item, e),
    }
}

pub(crate) fn with_error(item: TokenStream, e: syn::Error) -> TokenStream {
    let e = e.to_compile_error();
    quote!(#item #e)
}

/// The error for an item `#[traced]` cannot trace.
fn not_a_function(item: &TokenStream, full: syn::Error, signature: syn::Error) -> syn::Error {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Verbatim(_)) | Err(_) => {
            // A function without a body gets the specific message from
            // `MaybeItemFn`; anything unreadable gets the full parse's.
            if signature.to_string().contains("function body") {
                signature
            } else {
                full
            }
        }
        Ok(_) => syn::Error::new(
            Span::call_site(),
            "`#[traced]` can only be applied to functions and methods",
        ),
    }
}

/// A function split into what is generated around and what is kept.
struct FnParts {
    outer_attrs: Vec<Attribute>,
    inner_attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: Body,
}

enum Body {
    /// A body that parsed.
    Parsed(Block),
    /// A body that did not parse: its tokens, braces included.
    Raw(TokenStream),
}

impl From<ItemFn> for FnParts {
    fn from(f: ItemFn) -> Self {
        let (inner_attrs, outer_attrs) = f
            .attrs
            .into_iter()
            .partition(|a| matches!(a.style, AttrStyle::Inner(_)));
        FnParts {
            outer_attrs,
            inner_attrs,
            vis: f.vis,
            sig: f.sig,
            body: Body::Parsed(*f.block),
        }
    }
}

/// A function whose body is kept as tokens (it may not parse).
struct MaybeItemFn {
    outer_attrs: Vec<Attribute>,
    inner_attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: TokenStream,
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let outer_attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        if input.peek(Token![;]) {
            return Err(syn::Error::new(
                sig.ident.span(),
                "`#[traced]` needs a function body: put it on the implementation",
            ));
        }
        let content;
        let brace = syn::braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let rest: TokenStream = content.parse()?;
        let mut body = TokenStream::new();
        brace.surround(&mut body, |t| rest.to_tokens(t));
        Ok(MaybeItemFn {
            outer_attrs,
            inner_attrs,
            vis,
            sig,
            body,
        })
    }
}

impl MaybeItemFn {
    fn into_parts(self) -> FnParts {
        FnParts {
            outer_attrs: self.outer_attrs,
            inner_attrs: self.inner_attrs,
            vis: self.vis,
            sig: self.sig,
            body: Body::Raw(self.body),
        }
    }
}

/// The names bound by the function's parameters, in order (`self` excluded:
/// it is never logged).
fn param_names(sig: &Signature) -> Vec<Ident> {
    let mut out = Vec::new();
    for arg in &sig.inputs {
        if let FnArg::Typed(t) = arg {
            pat_names(&t.pat, &mut out);
        }
    }
    out
}

fn pat_names(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            if p.ident != "self" {
                out.push(p.ident.clone());
            }
            if let Some((_, sub)) = &p.subpat {
                pat_names(sub, out);
            }
        }
        Pat::Reference(p) => pat_names(&p.pat, out),
        Pat::Paren(p) => pat_names(&p.pat, out),
        Pat::Type(p) => pat_names(&p.pat, out),
        Pat::Tuple(p) => p.elems.iter().for_each(|p| pat_names(p, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|p| pat_names(p, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|p| pat_names(p, out)),
        Pat::Struct(p) => p.fields.iter().for_each(|f| pat_names(&f.pat, out)),
        // `_`, `..`, literals, ranges... bind nothing.
        _ => {}
    }
}

/// Every name in `skip(...)` / `input(...)` must be a parameter.
fn check_named_params(args: &TracedArgs, params: &[Ident], errors: &mut Errors) {
    let is_input = |name: &Ident| {
        args.input
            .as_ref()
            .is_some_and(|l| l.names.iter().any(|n| std::ptr::eq(n, name)))
    };
    for name in args.named_params() {
        let unraw = name.unraw();
        if unraw == "self" {
            if is_input(name) {
                errors.error(
                    name.span(),
                    "`self` is never logged as input; log what you need with `metadata = ...`",
                );
            }
            continue;
        }
        if !params.iter().any(|p| p.unraw() == unraw) {
            let list = params
                .iter()
                .map(|p| p.unraw().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let known = if list.is_empty() {
                "the function has no parameters to log".to_string()
            } else {
                format!("parameters: {list}")
            };
            errors.error(
                name.span(),
                format!("no parameter named `{unraw}`; {known}"),
            );
        }
    }
}

/// The input of a span that captured no argument: `{}` for a function
/// without parameters (as the Python SDK logs it), none when the arguments
/// were skipped.
fn no_params_input(args: &TracedArgs, params: &[Ident]) -> TokenStream {
    let krate = args.krate();
    if params.is_empty() && matches!(args.input_mode(), InputMode::AllExcept(_)) {
        quote!(::core::option::Option::Some(
            #krate::__private::input([])
        ))
    } else {
        quote!(::core::option::Option::None)
    }
}

/// Replaces `impl Trait` with `_`, so a return type can annotate a `let`.
struct ImplTraitEraser;

impl VisitMut for ImplTraitEraser {
    fn visit_type_mut(&mut self, t: &mut Type) {
        if let Type::ImplTrait(..) = t {
            *t = Type::Infer(syn::TypeInfer {
                underscore_token: Token![_](t.span()),
            });
        } else {
            syn::visit_mut::visit_type_mut(self, t);
        }
    }
}

fn is_never(sig: &Signature) -> bool {
    matches!(&sig.output, ReturnType::Type(_, t) if matches!(**t, Type::Never(_)))
}

/// A sync function whose signature says it returns a future. The macro sees
/// only tokens, so this is read from how the return type is spelled.
#[derive(Clone, Copy, PartialEq)]
enum FutureReturn {
    /// `-> impl Future<..>` (any `impl` with a bound whose last segment is
    /// `Future`, e.g. `impl std::future::Future<Output = T> + Send`).
    Opaque,
    /// `-> Pin<Box<dyn Future<..> ..>>`, `BoxFuture<..>` or
    /// `LocalBoxFuture<..>` (the `futures` aliases): the traced future is
    /// boxed again (when tracing is on) to keep the declared type.
    Boxed,
}

fn future_return(sig: &Signature) -> Option<FutureReturn> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return None;
    };
    match &**ty {
        Type::ImplTrait(it) if has_future_bound(&it.bounds) => Some(FutureReturn::Opaque),
        Type::Path(p) if p.qself.is_none() && is_boxed_future(&p.path) => Some(FutureReturn::Boxed),
        _ => None,
    }
}

fn has_future_bound<'a>(bounds: impl IntoIterator<Item = &'a TypeParamBound>) -> bool {
    bounds.into_iter().any(|b| match b {
        TypeParamBound::Trait(t) => t.path.segments.last().is_some_and(|s| s.ident == "Future"),
        _ => false,
    })
}

/// The generic type arguments of a path's last segment, if it is `name<..>`.
fn type_args<'a>(path: &'a syn::Path, name: &str) -> Option<Vec<&'a Type>> {
    let last = path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    Some(
        args.args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
    )
}

/// `Pin<Box<dyn Future..>>`, `BoxFuture<.., T>`, `LocalBoxFuture<.., T>`.
fn is_boxed_future(path: &syn::Path) -> bool {
    let is_alias = |name| type_args(path, name).is_some_and(|args| args.len() == 1);
    if is_alias("BoxFuture") || is_alias("LocalBoxFuture") {
        return true;
    }
    let Some([Type::Path(inner)]) = type_args(path, "Pin").as_deref() else {
        return false;
    };
    let Some([Type::TraitObject(dyn_future)]) = type_args(&inner.path, "Box").as_deref() else {
        return false;
    };
    has_future_bound(&dyn_future.bounds)
}

/// "A fake return edge": an unreachable `return` of the declared type at the
/// top of the body, so inference and type errors behave as in the plain
/// function and point at the user's code.
fn fake_return_edge(sig: &Signature) -> TokenStream {
    let (ty, span) = match &sig.output {
        ReturnType::Type(_, ty) => {
            let mut ty = (**ty).clone();
            ImplTraitEraser.visit_type_mut(&mut ty);
            (quote!(#ty), ty.span())
        }
        ReturnType::Default => (quote!(()), sig.ident.span()),
    };
    quote_spanned! {span=>
        #[allow(
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::let_unit_value,
            clippy::unreachable,
            clippy::needless_return
        )]
        if false {
            let __bt_fake_return: #ty = ::core::unreachable!();
            return __bt_fake_return;
        }
    }
}

/// How a sync function's tail hands back a future to trace.
enum AsyncTail<'a> {
    /// `async move { ... }`
    Block(&'a ExprAsync),
    /// `Box::pin(async move { ... })` (what `#[async_trait]` generates).
    BoxPin(&'a ExprCall, &'a ExprAsync),
}

fn async_tail(block: &Block) -> Option<AsyncTail<'_>> {
    let Some(Stmt::Expr(last, None)) = block.stmts.last() else {
        return None;
    };
    match last {
        Expr::Async(a) => Some(AsyncTail::Block(a)),
        Expr::Call(call) => {
            let Expr::Path(p) = &*call.func else {
                return None;
            };
            let segs: Vec<_> = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            let is_box_pin =
                segs.len() >= 2 && segs[segs.len() - 2] == "Box" && segs[segs.len() - 1] == "pin";
            match (is_box_pin, call.args.len(), call.args.first()) {
                (true, 1, Some(Expr::Async(a))) => Some(AsyncTail::BoxPin(call, a)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn gen_function(args: &TracedArgs, parts: FnParts, params: &[Ident]) -> TokenStream {
    let FnParts {
        outer_attrs,
        inner_attrs,
        vis,
        sig,
        body,
    } = parts;
    let ident = &sig.ident;
    let fn_name = ident.unraw().to_string();
    let krate = args.krate();

    // Locals of the generated code: `mixed_site`, so the body cannot see them.
    let span_var = Ident::new("__bt_span", Span::mixed_site());
    let tail_span_var = Ident::new("__bt_tail_span", Span::mixed_site());
    let ret_var = Ident::new("__bt_ret", Span::mixed_site());
    let fut_var = Ident::new("__bt_fut", Span::mixed_site());
    let s_var = Ident::new("__bt_s", Span::mixed_site());
    let r_var = Ident::new("__bt_r", Span::mixed_site());

    // ----- the span -----
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&fn_name, ident.span()));
    let span_type = span_type(args, &krate);
    // `context.caller_*` is the call site, as the Python SDK records it:
    // `#[track_caller]` hands the caller's location to `caller_location()`.
    // The body runs in a closure or an async block, so its own panics and
    // `#[track_caller]` calls keep their locations. Where the attribute
    // cannot go, the location is the function's definition.
    let loc_var = Ident::new("__bt_loc", Span::mixed_site());
    let tracks_caller = can_track_caller(&sig, &outer_attrs);
    let location = if tracks_caller {
        quote!(#krate::__private::caller_location())
    } else {
        quote_spanned!(ident.span()=> #krate::__private::caller_location())
    };
    let outer_attrs = if tracks_caller && !has_attr(&outer_attrs, "track_caller") {
        let mut attrs = outer_attrs;
        attrs.push(syn::parse_quote!(#[track_caller]));
        attrs
    } else {
        outer_attrs
    };
    let captured: Vec<&Ident> = match args.input_mode() {
        InputMode::Nothing => Vec::new(),
        InputMode::AllExcept(skip) => params
            .iter()
            .filter(|p| !skip.iter().any(|s| s.unraw() == p.unraw()))
            .collect(),
        InputMode::Only(only) => params
            .iter()
            .filter(|p| only.iter().any(|s| s.unraw() == p.unraw()))
            .collect(),
    };
    let input = if captured.is_empty() {
        no_params_input(args, params)
    } else {
        let keys = captured.iter().map(|p| p.unraw().to_string());
        quote! {
            ::core::option::Option::Some(#krate::__private::input([
                #( (#keys, #krate::__private::capture!(&#captured)), )*
            ]))
        }
    };
    let metadata = match &args.metadata {
        Some(expr) => quote_spanned!(expr.span()=> #krate::__private::to_json(&(#expr))),
        None => quote!(::core::option::Option::None),
    };
    // `None` when tracing is off: nothing is captured and there is no span
    // to drop. The capture runs in `start`, out of line.
    let span_init = quote! {
        let #span_var = if #krate::is_enabled() {
            ::core::option::Option::Some(#krate::__private::start(
                #krate::__private::SpanMeta {
                    name: #name,
                    span_type: #span_type,
                    function_name: #fn_name,
                    location: #location,
                },
                || (#input, #metadata),
            ))
        } else {
            ::core::option::Option::None
        };
    };

    let mode = if !args.logs_output() || is_never(&sig) {
        quote!(error_only)
    } else if let Some(expr) = &args.output {
        let v = Ident::new("__bt_out", Span::mixed_site());
        let mapped = output_mapping(expr, &v);
        quote!(map(#v => #mapped))
    } else {
        quote!(output)
    };
    let on_ready = quote! {
        |#s_var: &#krate::Span, #r_var| {
            #krate::__private::record_return!(#s_var, #r_var, #mode)
        }
    };

    let edge = if is_never(&sig) {
        TokenStream::new()
    } else {
        fake_return_edge(&sig)
    };
    // The body's statements, spliced after the edge (nesting the block would
    // trip `unused_braces` on one-expression bodies). A body that did not
    // parse is passed through as it is.
    let stmts = match &body {
        Body::Parsed(b) => {
            let s = &b.stmts;
            quote!(#(#s)*)
        }
        Body::Raw(t) => t.clone(),
    };

    let generated = if sig.asyncness.is_some() && captures_parent_at_call(&sig, &outer_attrs) {
        // async fn, rewritten as the `fn -> impl Future` it desugars to, so
        // the call itself can note the caller's span (see
        // `captures_parent_at_call`). The parameters are moved into the
        // future first, as `async fn` does, so they drop when it completes.
        let (sig, prelude) = desugar_async_sig(&sig);
        let parent_var = Ident::new("__bt_parent", Span::mixed_site());
        let span_init = quote! {
            let #span_var = if #krate::__private::enabled_with(&#parent_var) {
                ::core::option::Option::Some(#krate::__private::start_in(
                    #krate::__private::SpanMeta {
                        name: #name,
                        span_type: #span_type,
                        function_name: #fn_name,
                        location: #loc_var,
                    },
                    #parent_var,
                    || (#input, #metadata),
                ))
            } else {
                ::core::option::Option::None
            };
        };
        let generated = quote! {
            let #parent_var = #krate::__private::call_parent();
            let #loc_var = #location;
            async move {
                #prelude
                #span_init
                let #fut_var = async move { #edge #stmts };
                match #span_var {
                    ::core::option::Option::None => #fut_var.await,
                    #span_var => #krate::__private::traced_future(#span_var, #fut_var, #on_ready).await,
                }
            }
        };
        return quote! {
            #(#outer_attrs)*
            #vis #sig {
                #(#inner_attrs)*
                #generated
            }
        };
    } else if sig.asyncness.is_some() {
        // async fn: the body becomes an async block run in the span.
        let awaited = quote! {
            let #fut_var = async move { #edge #stmts };
            match #span_var {
                ::core::option::Option::None => #fut_var.await,
                #span_var => #krate::__private::traced_future(#span_var, #fut_var, #on_ready).await,
            }
        };
        if is_never(&sig) {
            quote! {
                #span_init
                #[allow(unreachable_code)]
                {
                    let _ = { #awaited };
                    ::core::unreachable!("a `-> !` function returned")
                }
            }
        } else {
            quote! { #span_init #awaited }
        }
    } else if let Some((block, tail)) = match &body {
        Body::Parsed(b) => async_tail(b).map(|t| (b, t)),
        Body::Raw(_) => None,
    } {
        // A sync function returning an async block (or `Box::pin` of one,
        // as `#[async_trait]` writes): trace the future it returns.
        let head = &block.stmts[..block.stmts.len() - 1];
        let wrap = |a: &ExprAsync| {
            quote! {
                #krate::__private::traced_future(#tail_span_var, #a, #on_ready)
            }
        };
        let tail_tokens = match tail {
            AsyncTail::Block(a) => wrap(a),
            AsyncTail::BoxPin(call, a) => {
                let func = &call.func;
                let wrapped = wrap(a);
                quote!(#func(#wrapped))
            }
        };
        quote! {
            #span_init
            let #tail_span_var = ::core::clone::Clone::clone(&#span_var);
            #krate::__private::run_sync(::core::option::Option::as_ref(&#span_var), move || {
                #edge
                #(#head)*
                #tail_tokens
            })
        }
    } else if let Some(kind) = future_return(&sig) {
        // A sync function returning a future some other way: the body runs
        // in the span, then the span follows the future it returned.
        let traced = quote! {
            #krate::__private::traced_future(#span_var, #fut_var, #on_ready)
        };
        let tail = match kind {
            FutureReturn::Opaque => traced,
            FutureReturn::Boxed => quote! {
                match #span_var {
                    ::core::option::Option::None => #fut_var,
                    #span_var => ::std::boxed::Box::pin(#traced),
                }
            },
        };
        quote! {
            #span_init
            let #fut_var = #krate::__private::run_sync(::core::option::Option::as_ref(&#span_var), move || { #edge #stmts });
            #tail
        }
    } else if is_never(&sig) {
        quote! {
            #span_init
            #krate::__private::run_never(::core::option::Option::as_ref(&#span_var), move || { #stmts })
        }
    } else {
        quote! {
            #span_init
            #[allow(clippy::let_unit_value)]
            let #ret_var = #krate::__private::run_sync(::core::option::Option::as_ref(&#span_var), move || { #edge #stmts });
            if let ::core::option::Option::Some(#s_var) = #span_var {
                #krate::__private::finish(#s_var, &#ret_var, #on_ready);
            }
            #ret_var
        }
    };

    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #generated
        }
    }
}

/// The `SpanType` of the span: `type = "..."` looked up in core's
/// `SpanType::ALL` by a `const` spanned at the literal, so an unknown name is
/// a compile error at the user's token with core's message, and the list of
/// span types lives only in core.
fn span_type(args: &TracedArgs, krate: &syn::Path) -> TokenStream {
    match &args.span_type {
        None => quote!(#krate::SpanType::Function),
        Some(lit) => {
            // Every token at the literal, so the compiler's error points there.
            let krate = respan(krate.to_token_stream(), lit.span());
            quote_spanned! {lit.span()=>
                {
                    const SPAN_TYPE: #krate::SpanType = match #krate::__private::span_type(#lit) {
                        ::core::result::Result::Ok(t) => t,
                        ::core::result::Result::Err(e) => ::core::panic!("{}", e.as_str()),
                    };
                    SPAN_TYPE
                }
            }
        }
    }
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                t = proc_macro2::TokenTree::Group(group);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// The value `output = expr` logs, given `v`, a reference to the return
/// value (or `Ok` value). A one-argument closure without a return type is
/// inlined, `{ let <pat> = v; <body> }`, so it may return a borrow of `v`;
/// anything else is called: `(expr)(v)`.
fn output_mapping(expr: &Expr, v: &Ident) -> TokenStream {
    match expr {
        Expr::Closure(c)
            if c.inputs.len() == 1
                && matches!(c.output, ReturnType::Default)
                && c.asyncness.is_none() =>
        {
            let pat = &c.inputs[0];
            let body = &c.body;
            quote_spanned!(expr.span()=> { let #pat = #v; #body })
        }
        _ => quote_spanned!(expr.span()=> (#expr)(#v)),
    }
}

fn has_attr(attrs: &[Attribute], name: &str) -> bool {
    attrs.iter().any(|a| a.path().is_ident(name))
}

/// True when the traced function can be `#[track_caller]` with its span
/// started in its own body: not `fn main` (rejected by rustc), Rust ABI only,
/// and not an `async fn` kept as such (the attribute does nothing there).
fn can_track_caller(sig: &Signature, outer_attrs: &[Attribute]) -> bool {
    let rust_abi = sig
        .abi
        .as_ref()
        .is_none_or(|abi| abi.name.as_ref().is_some_and(|n| n.value() == "Rust"));
    let kept_async = sig.asyncness.is_some() && !captures_parent_at_call(sig, outer_attrs);
    sig.ident != "main" && rust_abi && !kept_async
}

/// Attributes that are not macros, so they may stay on the rewritten
/// function. Any other attribute left below `#[traced]` may be a macro that
/// needs to see `async fn` (`#[tokio::main]`, `#[tokio::test]`...).
const INERT_ATTRS: &[&str] = &[
    "doc",
    "allow",
    "warn",
    "deny",
    "forbid",
    "expect",
    "must_use",
    "inline",
    "cold",
    "track_caller",
    "deprecated",
    "cfg",
];

/// True when a traced `async fn` can be rewritten as
/// `fn(..) -> impl Future<Output = R>` whose call notes the caller's span,
/// so `tokio::spawn(f(x))` nests under the span current at the call.
///
/// The rewrite is exactly what the compiler does for `async fn`: the
/// parameters are moved into the future, and the `impl Future` (generated by
/// this edition-2024 crate) captures every lifetime and type in scope
/// whatever the caller's edition. Kept as `async fn` (parent taken at first
/// poll): `unsafe` and `-> !` functions, and functions with another
/// non-inert attribute after `#[traced]`, which may need to see `async`.
fn captures_parent_at_call(sig: &Signature, outer_attrs: &[Attribute]) -> bool {
    let inert = |a: &Attribute| {
        let path = a.path();
        let first = path.segments.first().map(|s| s.ident.to_string());
        match first.as_deref() {
            Some("rustfmt" | "clippy") => path.segments.len() > 1,
            Some(name) => path.segments.len() == 1 && INERT_ATTRS.contains(&name),
            None => false,
        }
    };
    sig.unsafety.is_none() && !is_never(sig) && outer_attrs.iter().all(inert)
}

/// The signature without `async`, returning `impl Future<Output = R>`, and
/// the statements that move every parameter into the future (`async fn`
/// semantics: parameters live until the future completes, even unused ones).
/// Pattern parameters are bound to a hidden name and destructured inside.
fn desugar_async_sig(sig: &Signature) -> (Signature, TokenStream) {
    let mut sig = sig.clone();
    sig.asyncness = None;
    let ret = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    sig.output = syn::parse_quote!(-> impl ::core::future::Future<Output = #ret>);
    let mut prelude = TokenStream::new();
    for (i, arg) in sig.inputs.iter_mut().enumerate() {
        match arg {
            FnArg::Receiver(r) => {
                let attrs = &r.attrs;
                let this = r.self_token;
                prelude.extend(quote!(#(#attrs)* let _ = &#this;));
            }
            FnArg::Typed(t) => {
                let attrs = &t.attrs;
                match &mut *t.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                        let ident = &p.ident;
                        let mutability = p.mutability.take();
                        prelude.extend(quote!(#(#attrs)* let #mutability #ident = #ident;));
                    }
                    pat => {
                        let hidden = Ident::new(&format!("__bt_arg{i}"), Span::mixed_site());
                        let original = std::mem::replace(
                            pat,
                            Pat::Ident(syn::PatIdent {
                                attrs: Vec::new(),
                                by_ref: None,
                                mutability: None,
                                ident: hidden.clone(),
                                subpat: None,
                            }),
                        );
                        prelude.extend(quote! {
                            #(#attrs)* let #hidden = #hidden;
                            #(#attrs)* let #original = #hidden;
                        });
                    }
                }
            }
        }
    }
    (sig, prelude)
}
