//! The Grafana dashboard, docs/grafana/eshop.json: Grafana can import it,
//! every query in it names a metric eshop records, with labels it records
//! it with, and it covers what an operator watches (request rates and
//! latencies, projection lag, dead letters, relay throughput, cache hits).
//!
//! What eshop records is read from the workspace's sources when the test
//! runs, not from a list kept here: syn parses the `src` of every workspace
//! crate but this one (`#[cfg(test)]` items left out) for the
//! `metrics::counter!`, `gauge!` and `histogram!` calls, with the labels
//! they pass, as `"key" => value` pairs or as a slice of `("key", value)`
//! pairs (inline, or a `let` of the calling function). promql-parser reads
//! the queries. Renaming a metric in the code breaks this test, not a graph.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use promql_parser::parser::{Expr as Promql, LabelModifier, VectorMatchCardinality as Card};
use serde_json::Value;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Expr, ImplItem, Item, Lit, Macro, Pat, Token};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/eshop.json");

/// Labels Prometheus attaches to every series it scrapes.
const SCRAPE_LABELS: &[&str] = &["instance", "job"];

/// Grafana's own variables.
const GRAFANA_VARIABLES: &str =
    "__rate_interval __interval __interval_ms __range __range_s __range_ms";

const PANEL_TYPES: &str =
    "row timeseries stat gauge bargauge table heatmap text piechart state-timeline";

// ---------------------------------------------------------------------------
// The dashboard.

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

fn array(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Every panel: the top-level ones and those a collapsed row holds.
fn all_panels<'a>(dashboard: &'a Value) -> Vec<&'a Value> {
    let with_inner = |p: &'a Value| std::iter::once(p).chain(array(&p["panels"]));
    array(&dashboard["panels"]).flat_map(with_inner).collect()
}

fn name_of(panel: &Value) -> String {
    let title = panel["title"].as_str().unwrap_or("(untitled)");
    format!("panel {} \"{title}\"", panel["id"])
}

/// Whether `reference` is the Prometheus data source the `datasource`
/// template variable picks.
fn uses_the_datasource_variable(reference: &Value) -> bool {
    let uid = reference["uid"].as_str();
    reference["type"] == "prometheus" && matches!(uid, Some("${datasource}" | "$datasource"))
}

/// One PromQL query of the dashboard and where it is.
struct Query {
    place: String,
    expr: String,
    /// The label a `label_values(selector, label)` variable lists.
    listed_label: Option<String>,
}

/// The queries of the panels' targets and of the query variables.
fn queries(dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        for target in array(&panel["targets"]) {
            let ref_id = target["refId"].as_str().unwrap_or("?");
            let place = format!("{}, target {ref_id}", name_of(panel));
            let expr = target["expr"].as_str().map(str::to_owned);
            queries.extend(expr.map(|expr| Query {
                place,
                expr,
                listed_label: None,
            }));
        }
    }
    for variable in array(&dashboard["templating"]["list"]).filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str());
        let query = query.unwrap_or_default().trim();
        let place = format!("variable ${}", variable["name"].as_str().unwrap_or("?"));
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'));
        let (expr, label) = match inner.map(|inner| inner.rsplit_once(',').unwrap_or(("", inner))) {
            Some((selector, label)) => (selector, Some(label.trim().to_owned())),
            None => (query, None),
        };
        queries.push(Query {
            place,
            expr: expr.to_owned(),
            listed_label: label,
        });
    }
    queries
}

// ---------------------------------------------------------------------------
// What the workspace records, read with syn.

type Labels = BTreeSet<String>;

/// One metrics macro call: its kind, line, name (`None`: not a literal or a
/// `const` of the file) and labels (`None`: labels this scan cannot read).
type Recording = (&'static str, usize, Option<String>, Option<Labels>);

/// The visitor of one file. It runs twice: the first pass finds the file's
/// `const`s and whether it imports `metrics`, the second the calls.
#[derive(Default)]
struct Scan {
    consts: BTreeMap<String, String>,
    imports_metrics: bool,
    /// The `let`s of the function being read.
    lets: Vec<BTreeMap<String, Expr>>,
    recordings: Vec<Recording>,
    /// `("all", "")` for `set_buckets`, `("Suffix", "_seconds")` for a
    /// `Matcher::Suffix("_seconds")` of `set_buckets_for_metric`, ….
    buckets: Vec<(String, String)>,
}

fn cfg_test(attrs: &[Attribute]) -> bool {
    let test = |a: &Attribute| {
        a.parse_args::<syn::Path>()
            .is_ok_and(|p| p.is_ident("test"))
    };
    attrs.iter().any(|a| a.path().is_ident("cfg") && test(a))
}

fn idents(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

fn str_lit(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        Expr::MethodCall(call) => str_lit(&call.receiver), // "…".into()
        _ => None,
    }
}

fn parse_expr(tokens: &[TokenTree]) -> Option<Expr> {
    syn::parse2(tokens.iter().cloned().collect()).ok()
}

fn is_punct(token: &TokenTree, c: char, spacing: Spacing) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == c && p.spacing() == spacing)
}

impl Scan {
    fn of(source: &str) -> syn::Result<Self> {
        let file = syn::parse_file(source)?;
        let mut first = Self::default();
        first.visit_file(&file);
        let (consts, imports_metrics) = (first.consts, first.imports_metrics);
        let mut scan = Self {
            consts,
            imports_metrics,
            ..Self::default()
        };
        scan.visit_file(&file);
        Ok(scan)
    }

    fn in_function(&mut self, read: impl FnOnce(&mut Self)) {
        self.lets.push(BTreeMap::new());
        read(self);
        self.lets.pop();
    }

    /// A string literal, or a `const` of the file that holds one.
    fn literal(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Path(path) => self
                .consts
                .get(&path.path.get_ident()?.to_string())
                .cloned(),
            _ => str_lit(expr),
        }
    }

    /// The keys of `[("key", value), …]`, `&[…]`, `vec![…]` or a variable a
    /// `let` of the calling function binds to one.
    fn slice_keys(&self, expr: &Expr, follow_lets: bool) -> Option<Labels> {
        let keys = |elems: &mut dyn Iterator<Item = &Expr>| -> Option<Labels> {
            let key = |e: &Expr| match e {
                Expr::Tuple(t) => self.literal(t.elems.first()?),
                _ => None,
            };
            elems.map(key).collect()
        };
        match expr {
            Expr::Reference(r) => self.slice_keys(&r.expr, follow_lets),
            Expr::Array(a) => keys(&mut a.elems.iter()),
            Expr::Macro(m) if m.mac.path.is_ident("vec") => {
                let elems = m
                    .mac
                    .parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated);
                keys(&mut elems.ok()?.iter())
            }
            Expr::Path(p) if follow_lets => {
                let init = self.lets.last()?.get(&p.path.get_ident()?.to_string())?;
                self.slice_keys(init, false)
            }
            _ => None,
        }
    }

    fn recording(&self, kind: &'static str, mac: &Macro) -> Recording {
        let line = mac.bang_token.span.start().line;
        let mut args = vec![Vec::new()];
        for token in mac.tokens.clone() {
            match is_punct(&token, ',', Spacing::Alone) {
                true => args.push(Vec::new()),
                false => args.last_mut().expect("an argument").push(token),
            }
        }
        args.retain(|arg| !arg.is_empty());
        // `target: …` and `level: …` come before the name.
        let named = |arg: &[TokenTree]| match arg {
            [TokenTree::Ident(_), colon, _, ..] => is_punct(colon, ':', Spacing::Alone),
            _ => false,
        };
        let named = args.iter().take_while(|arg| named(arg)).count();
        args.drain(..named);
        let Some((name, labels)) = args.split_first() else {
            return (kind, line, None, Some(Labels::new()));
        };
        let arrow = |arg: &[TokenTree]| {
            let arrow = |w: &[TokenTree]| {
                is_punct(&w[0], '=', Spacing::Joint) && is_punct(&w[1], '>', Spacing::Alone)
            };
            arg.windows(2).position(arrow)
        };
        let labels = match labels {
            [] => Some(Labels::new()),
            [slice] if arrow(slice).is_none() => {
                parse_expr(slice).and_then(|e| self.slice_keys(&e, true))
            }
            pairs => pairs
                .iter()
                .map(|arg| self.literal(&parse_expr(&arg[..arrow(arg)?])?))
                .collect(),
        };
        let name = parse_expr(name).and_then(|e| self.literal(&e));
        (kind, line, name, labels)
    }

    /// The statements in the blocks of a macro whose body is no list of
    /// expressions (`tokio::select! { … => { … } }`).
    fn visit_blocks(&mut self, tokens: TokenStream) {
        for token in tokens {
            let TokenTree::Group(group) = token else {
                continue;
            };
            let brace = group.delimiter() == Delimiter::Brace;
            match brace.then(|| syn::Block::parse_within.parse2(group.stream())) {
                Some(Ok(stmts)) => stmts.iter().for_each(|stmt| self.visit_stmt(stmt)),
                _ => self.visit_blocks(group.stream()),
            }
        }
    }
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_item(&mut self, item: &'ast Item) {
        let attrs: &[Attribute] = match item {
            Item::Const(i) => &i.attrs,
            Item::Fn(i) => &i.attrs,
            Item::Impl(i) => &i.attrs,
            Item::Mod(i) => &i.attrs,
            Item::Static(i) => &i.attrs,
            Item::Trait(i) => &i.attrs,
            Item::Use(i) => &i.attrs,
            _ => &[],
        };
        if !cfg_test(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        if !matches!(item, ImplItem::Fn(f) if cfg_test(&f.attrs)) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.in_function(|scan| visit::visit_item_fn(scan, item));
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.in_function(|scan| visit::visit_impl_item_fn(scan, item));
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        self.in_function(|scan| visit::visit_trait_item_fn(scan, item));
    }

    fn visit_item_const(&mut self, item: &'ast syn::ItemConst) {
        if let Some(value) = str_lit(&item.expr) {
            self.consts.insert(item.ident.to_string(), value);
        }
        visit::visit_item_const(self, item);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.imports_metrics |= matches!(&item.tree, syn::UseTree::Path(p) if p.ident == "metrics");
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        let pat = match &local.pat {
            Pat::Type(typed) => &*typed.pat,
            pat => pat,
        };
        if let (Pat::Ident(ident), Some(init)) = (pat, &local.init) {
            let lets = self.lets.last_mut();
            lets.map(|lets| lets.insert(ident.ident.to_string(), (*init.expr).clone()));
        }
        visit::visit_local(self, local);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if call.method == "set_buckets" {
            self.buckets.push(("all".to_owned(), String::new()));
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let (Expr::Path(path), Some(value)) = (&*call.func, call.args.first().and_then(str_lit))
            && let [.., matcher, how] = idents(&path.path).as_slice()
            && matcher == "Matcher"
            && matches!(how.as_str(), "Full" | "Prefix" | "Suffix")
        {
            self.buckets.push((how.clone(), value));
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        let path = idents(&mac.path);
        let ours = path.len() == 1 && self.imports_metrics
            || path.len() >= 2 && path[path.len() - 2] == "metrics";
        let kind = ["counter", "gauge", "histogram"]
            .into_iter()
            .find(|k| path.last().is_some_and(|l| l == k));
        match kind {
            Some(kind) if ours => self.recordings.push(self.recording(kind, mac)),
            Some(_) => {}
            // Other macros' arguments (`format!(…)`), or the blocks in them.
            _ => match mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
                Ok(args) => args.iter().for_each(|arg| self.visit_expr(arg)),
                Err(_) => self.visit_blocks(mac.tokens.clone()),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Metric {
    kinds: BTreeSet<&'static str>,
    labels: Labels,
    /// Calls whose labels this scan cannot read.
    unreadable_labels: Vec<String>,
    recorded_at: Vec<String>,
}

impl Metric {
    fn kinds(&self) -> String {
        self.kinds.iter().copied().collect::<Vec<_>>().join(" and ")
    }
}

#[derive(Debug, Default)]
struct Catalogue {
    metrics: BTreeMap<String, Metric>,
    /// Calls whose metric name this scan cannot read.
    unreadable_names: Vec<String>,
    buckets: Vec<(String, String)>,
    files: usize,
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for path in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
    {
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A recorded metric, and which of a histogram's series (`_bucket`,
/// `_sum`, `_count`) a query names.
type Series<'a> = (&'a str, &'a Metric, Option<&'static str>);

impl Catalogue {
    fn add(&mut self, file: &str, source: &str) {
        let scan = Scan::of(source).unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
        self.files += 1;
        self.buckets.extend(scan.buckets);
        for (kind, line, name, labels) in scan.recordings {
            let at = format!("{file}:{line}");
            let Some(name) = name else {
                self.unreadable_names.push(at);
                continue;
            };
            let metric = self.metrics.entry(name).or_default();
            metric.kinds.insert(kind);
            match labels {
                Some(labels) => metric.labels.extend(labels),
                None => metric.unreadable_labels.push(at.clone()),
            }
            metric.recorded_at.push(at);
        }
    }

    /// The `src` of every workspace crate but this one (the root package's
    /// too).
    fn of_workspace() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        let members = manifest
            .split_once("members")
            .and_then(|(_, rest)| rest.split_once('['));
        let members = members.and_then(|(_, rest)| rest.split_once(']'));
        let (members, _) = members.expect("the workspace's members");
        let this = Path::new(env!("CARGO_MANIFEST_DIR"))
            .canonicalize()
            .expect("this crate");
        let members = members
            .split('"')
            .skip(1)
            .step_by(2)
            .map(|member| root.join(member));
        let mut crates: Vec<PathBuf> = members
            .filter(|dir| dir.canonicalize().is_ok_and(|dir| dir != this))
            .collect();
        if manifest.contains("\n[package]") {
            crates.push(root.clone());
        }
        let mut files = Vec::new();
        for dir in crates {
            rust_files(&dir.join("src"), &mut files);
        }
        files.sort();
        files.dedup();
        let mut catalogue = Self::default();
        for file in files {
            let source = std::fs::read_to_string(&file);
            let source = source.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let shown = file.strip_prefix(&root).unwrap_or(&file);
            catalogue.add(&shown.display().to_string(), &source);
        }
        catalogue
    }

    /// Whether the Prometheus exporter renders histogram `name` with
    /// buckets: one that no `set_buckets` or `set_buckets_for_metric` takes
    /// is rendered as a summary (quantiles, `_sum`, `_count`), without
    /// `_bucket` series.
    fn bucketed(&self, name: &str) -> bool {
        self.buckets.iter().any(|(how, value)| match how.as_str() {
            "Full" => name == value,
            "Prefix" => name.starts_with(value.as_str()),
            "Suffix" => name.ends_with(value.as_str()),
            _ => true,
        })
    }

    /// The recorded metric a series of the exposition is.
    fn resolve(&self, series: &str) -> Result<Series<'_>, String> {
        if !series.starts_with("eshop_") {
            return Err(format!(
                "{series} is not an eshop metric (eshop's /metrics serves eshop_* series only)"
            ));
        }
        if let Some((name, metric)) = self.metrics.get_key_value(series) {
            if metric.kinds == BTreeSet::from(["histogram"]) {
                return Err(format!(
                    "{series} is a histogram: its series are {series}_bucket, {series}_sum and {series}_count"
                ));
            }
            return Ok((name, metric, None));
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            let Some(base) = series.strip_suffix(suffix) else {
                continue;
            };
            let Some((name, metric)) = self.metrics.get_key_value(base) else {
                continue;
            };
            let (kinds, at) = (metric.kinds(), metric.recorded_at.join(", "));
            if !metric.kinds.contains("histogram") {
                return Err(format!(
                    "{series} is not a series of eshop: {base} is a {kinds} ({at}), and only a histogram has {suffix} series"
                ));
            }
            if suffix == "_bucket" && !self.bucketed(base) {
                return Err(format!(
                    "{series} is not served: no set_buckets or set_buckets_for_metric of the Prometheus exporter takes {base}, so it is rendered as a summary ({base}{{quantile}}, {base}_sum, {base}_count)"
                ));
            }
            return Ok((name, metric, Some(suffix)));
        }
        let family = series.splitn(3, '_').take(2).collect::<Vec<_>>().join("_") + "_";
        let similar: Vec<&str> = self
            .metrics
            .keys()
            .filter(|n| n.starts_with(&family))
            .map(String::as_str)
            .collect();
        let mut message = format!(
            "{series} is not a metric eshop records: no metrics::counter!, gauge! or histogram! call in the workspace's crates names it"
        );
        if !similar.is_empty() {
            message += &format!(" (recorded {family}*: {})", similar.join(", "));
        }
        if !self.unreadable_names.is_empty() {
            let at = self.unreadable_names.join(", ");
            message += &format!("; calls whose metric name this test cannot read: {at}");
        }
        Err(message)
    }
}

/// Whether `label` is on the series (`le` on a histogram's `_bucket`
/// only, the scrape's labels on all).
fn has_label((name, metric, part): Series<'_>, label: &str) -> Result<(), String> {
    if SCRAPE_LABELS.contains(&label)
        || metric.labels.contains(label)
        || (label == "le" && part == Some("_bucket"))
    {
        return Ok(());
    }
    let labels: Vec<&str> = metric.labels.iter().map(String::as_str).collect();
    let recorded = match labels.is_empty() {
        true => "no labels".to_owned(),
        false => format!("labels {}", labels.join(", ")),
    };
    let (part, at) = (part.unwrap_or_default(), metric.recorded_at.join(", "));
    let mut message =
        format!("{name}{part} has no label `{label}`: it is recorded with {recorded} ({at})");
    if label == "le" {
        message += "; `le` is a label of a histogram's _bucket series only";
    }
    if !metric.unreadable_labels.is_empty() {
        let at = metric.unreadable_labels.join(", ");
        message += &format!("; this test cannot read the labels at {at}");
    }
    Err(message)
}

// ---------------------------------------------------------------------------
// The queries, read with promql-parser.

/// The Grafana variables `$name`, `${name}` and `${name:format}` in a text.
fn variables_in(text: &str) -> Vec<(Range<usize>, &str)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices('$') {
        let rest = &text[at + 1..];
        let (name, len) = match rest.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (inner[..end].split(':').next().unwrap_or_default(), end + 2),
                None => continue,
            },
            None => {
                let end = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_');
                let end = end.unwrap_or(rest.len());
                (&rest[..end], end)
            }
        };
        if !name.is_empty() {
            found.push((at..at + 1 + len, name));
        }
    }
    found
}

/// A series selector, with the functions and aggregations around it.
struct Selector {
    series: String,
    /// `(label, op, value)`.
    matchers: Vec<(String, String, String)>,
    around: Vec<String>,
}

/// `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`, `group_left (…)` or
/// `group_right (…)`: the selectors it is over and the functions around it.
struct Grouping {
    clause: &'static str,
    labels: Vec<String>,
    over: Range<usize>,
    around: Vec<String>,
}

#[derive(Default)]
struct Parsed {
    selectors: Vec<Selector>,
    groupings: Vec<Grouping>,
}

/// The query read with its Grafana variables replaced: `5m` for the
/// intervals, `300` for their `_s` and `_ms`, `.*` for a template variable.
fn parse_promql(expr: &str) -> Result<Parsed, String> {
    let (mut plain, mut last) = (String::new(), 0);
    for (span, name) in variables_in(expr) {
        plain += &expr[last..span.start];
        plain += match name {
            "__rate_interval" | "__interval" | "__range" => "5m",
            name if name.starts_with("__") => "300",
            _ => ".*",
        };
        last = span.end;
    }
    plain += &expr[last..];
    let mut parsed = Parsed::default();
    if !plain.trim().is_empty() {
        let tree = promql_parser::parser::parse(&plain)?;
        walk(&tree, &mut Vec::new(), &mut parsed)?;
    }
    Ok(parsed)
}

fn walk(expr: &Promql, around: &mut Vec<String>, parsed: &mut Parsed) -> Result<(), String> {
    let first = parsed.selectors.len();
    let group = |parsed: &mut Parsed, clause, labels: &[String], around: &[String]| {
        let (labels, over, around) = (
            labels.to_vec(),
            first..parsed.selectors.len(),
            around.to_vec(),
        );
        parsed.groupings.push(Grouping {
            clause,
            labels,
            over,
            around,
        });
    };
    let selector = match expr {
        Promql::Aggregate(aggregation) => {
            around.push(aggregation.op.to_string());
            for inner in aggregation.param.iter().chain([&aggregation.expr]) {
                walk(inner, around, parsed)?;
            }
            around.pop();
            match &aggregation.modifier {
                Some(LabelModifier::Include(l)) => group(parsed, "by", &l.labels, around),
                Some(LabelModifier::Exclude(l)) => group(parsed, "without", &l.labels, around),
                None => {}
            }
            return Ok(());
        }
        Promql::Binary(binary) => {
            walk(&binary.lhs, around, parsed)?;
            walk(&binary.rhs, around, parsed)?;
            let modifier = binary.modifier.as_ref();
            match modifier.and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => group(parsed, "on", &l.labels, around),
                Some(LabelModifier::Exclude(l)) => group(parsed, "ignoring", &l.labels, around),
                None => {}
            }
            match modifier.map(|m| &m.card) {
                Some(Card::ManyToOne(l)) => group(parsed, "group_left", &l.labels, around),
                Some(Card::OneToMany(l)) => group(parsed, "group_right", &l.labels, around),
                _ => {}
            }
            return Ok(());
        }
        Promql::Call(call) => {
            around.push(call.func.name.to_owned());
            for arg in &call.args.args {
                walk(arg, around, parsed)?;
            }
            around.pop();
            return Ok(());
        }
        Promql::Unary(unary) => return walk(&unary.expr, around, parsed),
        Promql::Paren(paren) => return walk(&paren.expr, around, parsed),
        Promql::Subquery(subquery) => return walk(&subquery.expr, around, parsed),
        Promql::VectorSelector(selector) => selector,
        Promql::MatrixSelector(matrix) => &matrix.vs,
        _ => return Ok(()),
    };
    let all = &selector.matchers;
    let all = all.matchers.iter().chain(all.or_matchers.iter().flatten());
    let (names, matchers): (Vec<_>, Vec<_>) = all.partition(|m| m.name == "__name__");
    let series = selector
        .name
        .clone()
        .or_else(|| names.first().map(|m| m.value.clone()));
    let series = series.ok_or("a selector without a metric name")?;
    let matchers = matchers
        .iter()
        .map(|m| (m.name.clone(), m.op.to_string(), m.value.clone()));
    let (matchers, around) = (matchers.collect(), around.clone());
    parsed.selectors.push(Selector {
        series,
        matchers,
        around,
    });
    Ok(())
}

/// What is wrong with a parsed query against what eshop records.
fn check_query(parsed: &Parsed, catalogue: &Catalogue) -> Vec<String> {
    let mut errors = Vec::new();
    let mut resolved = Vec::new();
    for selector in &parsed.selectors {
        let series = catalogue
            .resolve(&selector.series)
            .map_err(|e| errors.push(e))
            .ok();
        resolved.push(series);
        let Some(series @ (name, metric, part)) = series else {
            continue;
        };
        for (label, op, value) in &selector.matchers {
            if let Err(error) = has_label(series, label) {
                errors.push(format!("matcher {label}{op}\"{value}\": {error}"));
            }
        }
        let (kinds, at) = (metric.kinds(), metric.recorded_at.join(", "));
        for function in &selector.around {
            let rate = matches!(function.as_str(), "rate" | "irate" | "increase" | "resets");
            if rate && part.is_none() && !metric.kinds.contains("counter") {
                errors.push(format!(
                    "{function}() over {}: {name} is a {kinds} ({at}); rate, irate, increase and resets need a counter or a histogram's _bucket, _sum or _count",
                    selector.series
                ));
            }
        }
        if selector.around.iter().any(|f| f == "histogram_quantile") && part != Some("_bucket") {
            errors.push(format!(
                "histogram_quantile() over {}: it needs a histogram's _bucket series",
                selector.series
            ));
        }
    }
    for grouping in &parsed.groupings {
        let over: Vec<Series> = resolved[grouping.over.clone()]
            .iter()
            .flatten()
            .copied()
            .collect();
        let clause = format!("`{} ({})`", grouping.clause, grouping.labels.join(", "));
        let aggregation = matches!(grouping.clause, "by" | "without");
        for label in &grouping.labels {
            let missing: Vec<String> = over
                .iter()
                .filter_map(|s| has_label(*s, label).err())
                .collect();
            if aggregation {
                errors.extend(missing.iter().map(|error| format!("{clause}: {error}")));
            } else if !over.is_empty() && missing.len() == over.len() {
                errors.push(format!(
                    "{clause}: no series of the expression has the label `{label}`"
                ));
            }
        }
        let keeps_le = grouping.labels.iter().any(|l| l == "le") == (grouping.clause == "by");
        if aggregation && !keeps_le && grouping.around.iter().any(|f| f == "histogram_quantile") {
            errors.push(format!(
                "histogram_quantile() over {clause}: the aggregation must keep `le`"
            ));
        }
    }
    errors
}

/// The problems of a dashboard query, each naming where it is.
fn query_problems(query: &Query, catalogue: &Catalogue) -> Vec<String> {
    let (place, expr) = (&query.place, &query.expr);
    let parsed = match parse_promql(expr) {
        Ok(parsed) => parsed,
        Err(error) => return vec![format!("{place}: `{expr}` does not parse: {error}")],
    };
    let mut problems = check_query(&parsed, catalogue);
    if let Some(label) = &query.listed_label {
        let series = parsed
            .selectors
            .iter()
            .filter_map(|s| catalogue.resolve(&s.series).ok());
        let series: Vec<_> = series.collect();
        let known = match series.is_empty() {
            true => catalogue.metrics.values().any(|m| m.labels.contains(label)),
            false => series.iter().all(|s| has_label(*s, label).is_ok()),
        };
        if !known {
            problems.push(format!(
                "label_values lists `{label}`, a label none of its series has"
            ));
        }
    }
    let located = |problem| format!("{place}: {problem}\n      in `{expr}`");
    problems.into_iter().map(located).collect()
}

fn report(problems: &[String]) -> String {
    format!(
        "{} problem(s) in {DASHBOARD}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    )
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn the_dashboard_is_one_grafana_imports() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    macro_rules! check {
        ($ok:expr, $($message:tt)+) => {
            if !$ok {
                problems.push(format!($($message)+));
            }
        };
    }
    let text = |value: &Value| value.as_str().is_some_and(|s| !s.trim().is_empty());
    check!(text(&dashboard["title"]), "no title");
    let uid = &dashboard["uid"];
    let uid_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
    let good_uid = uid
        .as_str()
        .is_some_and(|u| (1..=40).contains(&u.len()) && u.chars().all(uid_chars));
    check!(good_uid, "uid {uid} is not 1 to 40 letters, digits, - or _");
    let schema = &dashboard["schemaVersion"];
    check!(
        schema.as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {schema} (Grafana 10 and later write 36 or more)"
    );
    let time = &dashboard["time"];
    check!(
        time["from"].is_string() && time["to"].is_string(),
        "no time range"
    );
    check!(array(&dashboard["panels"]).next().is_some(), "no panels");

    let variables: Vec<&Value> = array(&dashboard["templating"]["list"]).collect();
    let mut defined = BTreeSet::new();
    for variable in &variables {
        let name = variable["name"].as_str().unwrap_or_default();
        check!(
            !name.is_empty(),
            "a template variable without a name: {variable}"
        );
        check!(
            defined.insert(name),
            "template variable ${name} is defined twice"
        );
        let datasource = &variable["datasource"];
        let ok = variable["type"] != "query" || uses_the_datasource_variable(datasource);
        check!(
            ok,
            "variable ${name}: its datasource is {datasource}, not the Prometheus ${{datasource}}"
        );
    }
    let datasource = |v: &&Value| v["name"] == "datasource" && v["type"] == "datasource";
    let datasource = variables
        .iter()
        .any(|v| datasource(v) && v["query"] == "prometheus");
    check!(
        datasource,
        "no `datasource` template variable of type datasource for prometheus"
    );

    let mut ids = BTreeSet::new();
    for panel in all_panels(&dashboard) {
        let name = name_of(panel);
        match panel["id"].as_u64() {
            Some(id) => check!(ids.insert(id), "{name}: id {id} is used by another panel"),
            None => check!(false, "{name}: no numeric id"),
        }
        let kind = panel["type"].as_str().unwrap_or_default();
        let (types, ty) = (PANEL_TYPES.replace(' ', ", "), &panel["type"]);
        let known = PANEL_TYPES.split(' ').any(|t| t == kind);
        check!(known, "{name}: type {ty} is not a panel type ({types})");
        let grid = &panel["gridPos"];
        match ["h", "w", "x", "y"].map(|k| grid[k].as_u64()) {
            [Some(h), Some(w), Some(x), Some(_)] => check!(
                h >= 1 && (1..=24).contains(&w) && x + w <= 24,
                "{name}: gridPos {grid} is not within Grafana's 24 columns"
            ),
            _ => check!(false, "{name}: gridPos {grid} lacks an h, w, x or y"),
        }
        check!(text(&panel["title"]), "{name}: no title");
        if kind == "row" {
            check!(
                panel["panels"].is_array(),
                "{name}: a row without its `panels` list"
            );
            let open_with_panels =
                panel["collapsed"] != true && array(&panel["panels"]).next().is_some();
            check!(
                !open_with_panels,
                "{name}: an open row holds panels; they belong after it"
            );
            continue;
        }
        let described = panel["description"]
            .as_str()
            .is_some_and(|d| d.trim().len() >= 20);
        check!(described, "{name}: no description of what it shows");
        let datasource = &panel["datasource"];
        check!(
            uses_the_datasource_variable(datasource),
            "{name}: datasource {datasource} is not the Prometheus ${{datasource}}"
        );
        check!(
            array(&panel["targets"]).next().is_some(),
            "{name}: no targets"
        );
        let mut refs = BTreeSet::new();
        for target in array(&panel["targets"]) {
            let ref_id = target["refId"].as_str().unwrap_or_default();
            let unique = !ref_id.is_empty() && refs.insert(ref_id);
            check!(
                unique,
                "{name}: refId {:?} is missing or used twice",
                target["refId"]
            );
            check!(text(&target["expr"]), "{name}, target {ref_id}: no expr");
            let datasource = &target["datasource"];
            check!(
                target
                    .get("datasource")
                    .is_none_or(uses_the_datasource_variable),
                "{name}, target {ref_id}: datasource {datasource} is not the Prometheus ${{datasource}}"
            );
        }
    }

    // No two panels on the same cells.
    let placed: Vec<(String, [u64; 4])> = array(&dashboard["panels"])
        .filter_map(|p| {
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| p["gridPos"][k].as_u64());
            Some((name_of(p), [x?, y?, w?, h?]))
        })
        .collect();
    for (i, (a, [ax, ay, aw, ah])) in placed.iter().enumerate() {
        for (b, [bx, by, bw, bh]) in &placed[i + 1..] {
            let overlap = ax < &(bx + bw) && bx < &(ax + aw) && ay < &(by + bh) && by < &(ay + ah);
            check!(!overlap, "{a} and {b} overlap");
        }
    }

    // Every variable a query uses is defined.
    for query in queries(&dashboard) {
        for (_, variable) in variables_in(&query.expr) {
            let known =
                defined.contains(variable) || GRAFANA_VARIABLES.split(' ').any(|v| v == variable);
            check!(
                known,
                "{}: ${variable} is not a template variable of the dashboard",
                query.place
            );
        }
    }
    assert!(problems.is_empty(), "{}", report(&problems));
}

#[test]
fn every_query_names_a_metric_eshop_records_with_its_labels() {
    let catalogue = Catalogue::of_workspace();
    let (files, metrics) = (catalogue.files, catalogue.metrics.len());
    assert!(
        files > 10 && metrics > 10,
        "the workspace scan read {files} files and found {metrics} metrics: is the workspace where this test expects it?",
    );
    let queries = queries(&dashboard());
    assert!(!queries.is_empty(), "{DASHBOARD} has no queries");
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|q| query_problems(q, &catalogue))
        .collect();
    assert!(problems.is_empty(), "{}", report(&problems));
}

/// What an operator watches: a series, the function around it (if one
/// must be) and a matcher it must have (if one must).
const WATCHED: &str = "
the REST request rate | eshop_http_requests_total | rate |
the REST latency | eshop_http_request_duration_seconds_bucket | histogram_quantile |
the GraphQL request rate | eshop_graphql_requests_total | rate |
the GraphQL latency | eshop_graphql_request_duration_seconds_bucket | histogram_quantile |
the projection lag in events | eshop_projection_lag_events | |
the projection lag in seconds | eshop_projection_lag_seconds | |
the dead letters | eshop_projection_dead_letters | |
the relay throughput | eshop_relay_events_published_total | rate |
the cache hits | eshop_cache_operations_total | rate | outcome=hit
";

#[test]
fn the_dashboard_covers_what_the_operators_watch() {
    let catalogue = Catalogue::of_workspace();
    let queries = queries(&dashboard());
    let panels = queries
        .iter()
        .filter(|query| query.place.starts_with("panel"));
    let parsed: Vec<Parsed> = panels
        .filter_map(|query| parse_promql(&query.expr).ok())
        .collect();
    let selectors: Vec<&Selector> = parsed.iter().flat_map(|query| &query.selectors).collect();
    // Cache hits, for as long as there is a cache.
    let cache = catalogue
        .metrics
        .contains_key("eshop_cache_operations_total");
    let wants = WATCHED.lines().filter(|line| !line.is_empty());
    let wants = wants.filter(|line| cache || !line.contains("eshop_cache_operations_total"));
    let mut problems = Vec::new();
    for want in wants {
        let fields: Vec<&str> = want.split('|').map(str::trim).collect();
        let [what, series, function, matcher] = fields[..] else {
            panic!("{want:?} is not `what | series | function | label=value`");
        };
        let matcher = matcher.split_once('=');
        let queried = selectors.iter().any(|selector| {
            let matches = |(label, value): (&str, &str)| {
                selector
                    .matchers
                    .iter()
                    .any(|(l, _, v)| l == label && v == value)
            };
            selector.series == series
                && (function.is_empty() || selector.around.iter().any(|f| f == function))
                && matcher.is_none_or(matches)
        });
        let mut how = series.to_owned();
        if let Some((label, value)) = matcher {
            how = format!("{how}{{{label}=\"{value}\"}}");
        }
        if !function.is_empty() {
            how = format!("{function}(… {how} …)");
        }
        if !queried {
            problems.push(format!("no panel shows {what}: none queries {how}"));
        }
    }
    assert!(problems.is_empty(), "{}", report(&problems));
}

// ---------------------------------------------------------------------------
// The checks themselves, on code and queries made to fail them.

const SAMPLE: &str = r####"
use std::time::Instant;
// metrics::counter!("eshop_commented_total").increment(1);
/* metrics::counter!("eshop_block_commented_total") */
const NAME: &str = "eshop_const_total";
fn f(route: String, elsewhere: &[(&str, String)]) {
    let labels = [("method", "GET".to_owned()), ("route", route)];
    let quote = '"';
    metrics::counter!("eshop_sliced_total", &labels).increment(1);
    metrics::
        histogram!(
            "eshop_split_seconds",
            "outcome" => if quote == '"' { "ok" } else { "error" }
        )
        .record(1.0);
    metrics::gauge!(NAME, &[("projection", NAME.to_owned())]).set(1.0);
    let s = "metrics::counter!(\"eshop_in_a_string_total\")";
    metrics::counter!(format!("eshop_{s}")).increment(1);
    metrics::counter!("eshop_dynamic_total", elsewhere).increment(1);
    metrics::histogram!("eshop_summary_bytes").record(1.0);
    let _ = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &[1.0]);
    tokio::select! {
        _ = a => {}
        b = c => match b { _ => { metrics::counter!("eshop_selected_total", "x" => 1).increment(1); } }
    }
}
impl S {
    #[cfg(test)]
    fn t() { metrics::counter!("eshop_in_a_test_fn_total").increment(1); }
}
#[cfg(test)]
mod tests {
    #[test]
    fn t() {
        metrics::counter!("eshop_in_a_test_total").increment(1);
    }
}
"####;

fn sample() -> Catalogue {
    let mut catalogue = Catalogue::default();
    catalogue.add("sample.rs", SAMPLE);
    catalogue
}

#[test]
fn the_scan_reads_names_and_labels_as_the_code_writes_them() {
    let catalogue = sample();
    let found: Vec<String> = catalogue
        .metrics
        .iter()
        .map(|(name, m)| {
            let labels = m
                .labels
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",");
            format!(
                "{name} {} [{labels}] {}",
                m.kinds(),
                m.unreadable_labels.len()
            )
        })
        .collect();
    let expected = [
        "eshop_const_total gauge [projection] 0",
        "eshop_dynamic_total counter [] 1",
        "eshop_selected_total counter [x] 0",
        "eshop_sliced_total counter [method,route] 0",
        "eshop_split_seconds histogram [outcome] 0",
        "eshop_summary_bytes histogram [] 0",
    ];
    assert_eq!(found, expected);
    assert_eq!(
        catalogue.buckets,
        [("Suffix".to_owned(), "_seconds".to_owned())]
    );
    assert_eq!(catalogue.unreadable_names, ["sample.rs:18"]);
}

/// Queries the sample's metrics pass.
const FINE: &str = r#"
sum by (method, route) (rate(eshop_sliced_total{route=~"/orders.*"}[$__rate_interval]))
sum(rate(eshop_sliced_total[5m])) by (instance)
histogram_quantile(0.99, sum by (le, outcome) (rate(eshop_split_seconds_bucket[5m])))
sum(rate(eshop_split_seconds_sum[5m])) / sum(rate(eshop_split_seconds_count[5m]))
max by (projection) (eshop_const_total{projection=~"$projection"})
sum(rate(eshop_summary_bytes_count[5m]))
sum(rate(eshop_sliced_total[5m])) / on (method) group_left (route) sum by (method) (rate(eshop_sliced_total[5m]))
"#;

/// Queries the sample's metrics fail, each followed by (indented) what the
/// check says.
const WRONG: &str = r#"
sum(rate(eshop_slised_total[5m]))
    panel 7 "Sample", target A: eshop_slised_total is not a metric eshop records
sum by (status) (rate(eshop_sliced_total[5m]))
    `by (status)`: eshop_sliced_total has no label `status`: it is recorded with labels method, route (sample.rs:9)
eshop_sliced_total{status="500"}
    matcher status="500": eshop_sliced_total has no label `status`
sum(rate(eshop_sliced_total[5m])) by (status)
    eshop_sliced_total has no label `status`
histogram_quantile(0.99, sum by (outcome) (rate(eshop_split_seconds_bucket[5m])))
    the aggregation must keep `le`
histogram_quantile(0.99, sum without (le) (rate(eshop_split_seconds_bucket[5m])))
    histogram_quantile() over `without (le)`: the aggregation must keep `le`
histogram_quantile(0.99, sum by (le) (rate(eshop_sliced_total[5m])))
    histogram_quantile() over eshop_sliced_total: it needs a histogram's _bucket series
rate(eshop_const_total[5m])
    rate() over eshop_const_total: eshop_const_total is a gauge
eshop_split_seconds
    eshop_split_seconds is a histogram
eshop_sliced_total_count
    only a histogram has _count series
sum by (le) (eshop_sliced_total)
    `le` is a label of a histogram's _bucket series only
rate(up[5m])
    up is not an eshop metric
histogram_quantile(0.5, sum by (le) (rate(eshop_summary_bytes_bucket[5m])))
    eshop_summary_bytes_bucket is not served: no set_buckets or set_buckets_for_metric of the Prometheus exporter takes eshop_summary_bytes
sum by (x) (eshop_dynamic_total)
    cannot read the labels at sample.rs:19
sum(rate(eshop_sliced_total[5m])) / on (status) sum(rate(eshop_sliced_total[5m]))
    `on (status)`: no series of the expression has the label `status`
sum(rate(eshop_sliced_totl[5m])
    does not parse
rat(eshop_sliced_total[5m])
    does not parse: unknown function with name 'rat'
{__name__="eshop_slised_total"}
    eshop_slised_total is not a metric eshop records
{route="/orders"}
    a selector without a metric name
"#;

#[test]
fn the_query_check_names_the_wrong_metric_or_label() {
    let catalogue = sample();
    let problems = |expr: &str| {
        let place = "panel 7 \"Sample\", target A".to_owned();
        let query = Query {
            place,
            expr: expr.to_owned(),
            listed_label: None,
        };
        query_problems(&query, &catalogue).join("\n")
    };
    for fine in FINE.lines().filter(|line| !line.is_empty()) {
        assert_eq!(problems(fine), "", "{fine}");
    }
    let lines: Vec<&str> = WRONG.lines().filter(|line| !line.is_empty()).collect();
    for pair in lines.chunks(2) {
        let (wrong, says) = (pair[0], pair[1].trim());
        let found = problems(wrong);
        assert!(
            found.contains(says),
            "{wrong}: {found:?} does not say {says:?}"
        );
    }
}
