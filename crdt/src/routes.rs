//! Routes: how an HTTP request that a proxy asks about becomes a Cedar
//! request. A bundle may hold a routes file (`routes.toml` in the bundle's
//! directory, the `routes` field in the document); every node merges the
//! routes of every bundle in force the same way, so every node maps one
//! HTTP request to the same principal, action, resource and context.
//!
//! ```toml
//! # What a request that matches no route gets: "deny" (the default) or
//! # "allow". Across bundles, "allow" holds only when no routes file says
//! # "deny".
//! unmatched = "deny"
//! # Request headers copied into context.http.headers (names, any case).
//! headers = ["x-tenant"]
//!
//! [[route]]
//! host = "docs.example.com"      # optional: exact host, any case, port ignored
//! path = "/docs/{id}"            # matchit syntax: {name} is one segment, {*name} the rest
//! resource = 'Doc::"{id}"'       # a uid template over the path's segments
//! actions = { GET = 'Action::"view"', PUT = 'Action::"edit"', "*" = 'Action::"other"' }
//! ```
//!
//! Matching ([`RouteTable::map`]), in order:
//! 1. The path is the request target up to `?` or `#`. A path with an
//!    encoded `/`, `\` or `.` (`%2F`, `%5C`, `%2E`), a backslash, a control
//!    character, or that does not start with `/`, is refused
//!    ([`NoRoute::BadPath`]): an upstream could read it otherwise than
//!    the route does. Dot segments are removed and repeated slashes
//!    collapsed (RFC 3986, 5.2.4).
//! 2. The routes of the request's host, then the routes with no host.
//! 3. The method picks the action: its own entry, else `"*"`. A matched
//!    path whose route names neither is [`NoRoute::Method`].
//! 4. The resource's slots are filled from the segments, percent-decoded.
//!
//! Merging: bundles are taken in name order; a route whose host and path
//! collide with a route of an earlier bundle is left out and named in
//! [`RouteTable::conflicts`]. Within one bundle a collision is an error,
//! caught before the bundle is signed.
//!
//! The request's context gets `http` ([`RouteTable::context`]):
//! `{method, path, query, host, client, headers, params}`, every value a
//! string (`headers` and `params` are records).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr as _;
use std::sync::Arc;

use cedar_policy::{EntityUid, RestrictedExpression};
use serde::Deserialize;

use crate::template::UidTemplate;

/// What a request that matches no route gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// A deny (the default).
    #[default]
    Deny,
    /// An allow.
    Allow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    unmatched: Option<Unmatched>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    #[serde(default)]
    host: Option<String>,
    path: String,
    resource: String,
    actions: BTreeMap<String, String>,
}

/// One route, read and checked.
#[derive(Clone, Debug)]
pub struct Route {
    /// The host it is for (lowercase), or any.
    pub host: Option<String>,
    /// The path pattern, matchit syntax.
    pub path: String,
    /// The resource's uid template.
    pub resource: UidTemplate,
    /// Method (uppercase, or `*`) to action.
    pub actions: BTreeMap<String, EntityUid>,
}

/// A bundle's routes file, read and checked.
#[derive(Clone, Debug, Default)]
pub struct BundleRoutes {
    /// Its `unmatched`, when it sets one.
    pub unmatched: Option<Unmatched>,
    /// Header names for the context, lowercase.
    pub headers: Vec<String>,
    /// Its routes, in file order.
    pub routes: Vec<Route>,
}

/// The largest routes file.
pub const MAX_ROUTES_BYTES: usize = 256 * 1024;
/// The most routes in one file.
pub const MAX_ROUTES: usize = 4096;

impl BundleRoutes {
    /// Reads and checks a routes file: TOML in the documented shape, paths
    /// that start with `/` and that matchit takes, no two routes of the
    /// file on one host and path, resource templates whose slots are the
    /// path's segments, methods in capitals (or `*`), actions that are
    /// uids.
    pub fn parse(text: &str) -> Result<BundleRoutes, String> {
        if text.len() > MAX_ROUTES_BYTES {
            return Err(format!(
                "the routes file is {} bytes, over the limit of {MAX_ROUTES_BYTES}",
                text.len()
            ));
        }
        let file: RoutesFile =
            toml::from_str(text).map_err(|e| e.message().lines().collect::<Vec<_>>().join(" "))?;
        if file.routes.len() > MAX_ROUTES {
            return Err(format!(
                "{} routes, over the limit of {MAX_ROUTES}",
                file.routes.len()
            ));
        }
        let mut headers = Vec::new();
        for h in &file.headers {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(format!("headers: {h:?} is not a header name"));
            }
            headers.push(h.to_ascii_lowercase());
        }
        headers.sort();
        headers.dedup();
        let mut routes = Vec::with_capacity(file.routes.len());
        let mut table = RouteTable::default();
        for (i, spec) in file.routes.into_iter().enumerate() {
            let n = i + 1;
            let route = Route::read(spec).map_err(|e| format!("route {n}: {e}"))?;
            table
                .insert(&route, 0)
                .map_err(|e| format!("route {n} ({}): {e}", route.path))?;
            routes.push(route);
        }
        Ok(BundleRoutes {
            unmatched: file.unmatched,
            headers,
            routes,
        })
    }
}

impl Route {
    fn read(spec: RouteSpec) -> Result<Route, String> {
        if !spec.path.starts_with('/') {
            return Err(format!("the path {:?} does not start with /", spec.path));
        }
        let mut check = matchit::Router::new();
        check
            .insert(spec.path.as_str(), ())
            .map_err(|e| format!("the path {:?}: {e}", spec.path))?;
        let segments = segment_names(&spec.path);
        let resource = UidTemplate::parse(&spec.resource).map_err(|e| format!("resource: {e}"))?;
        if let Some(s) = resource.slots().find(|s| !segments.contains(*s)) {
            return Err(format!(
                "resource {:?} uses {{{s}}}, which is not a segment of {:?}",
                spec.resource, spec.path
            ));
        }
        if spec.actions.is_empty() {
            return Err("it has no actions".into());
        }
        let mut actions = BTreeMap::new();
        for (method, action) in spec.actions {
            if method != "*"
                && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(format!(
                    "{method:?} is not a method in capitals (GET, POST, …) or \"*\""
                ));
            }
            let uid = EntityUid::from_str(&action)
                .map_err(|e| format!("action {action:?} is not a uid: {e}"))?;
            actions.insert(method, uid);
        }
        let host = match spec.host {
            None => None,
            Some(h) => {
                let h = normal_host(&h);
                if h.is_empty() || h.contains('/') || h.contains('*') {
                    return Err(format!("host {h:?} is not a host name"));
                }
                Some(h)
            }
        };
        Ok(Route {
            host,
            path: spec.path,
            resource,
            actions,
        })
    }
}

fn segment_names(path: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        names.insert(name.trim_start_matches('*').to_owned());
        rest = &rest[open + close + 1..];
    }
    names
}

/// The host as routes compare it: lowercase, no port, no trailing dot.
fn normal_host(host: &str) -> String {
    let host = host.trim();
    let host = if let Some(v6) = host.strip_prefix('[') {
        // `[::1]:8080` keeps its brackets, loses its port.
        match v6.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The HTTP request a proxy asks about.
#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    /// The method, as sent.
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The host it was sent to.
    pub host: String,
    /// The client's address, when the proxy says.
    pub client: Option<String>,
    /// Its headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

/// A request mapped by a route.
#[derive(Clone, Debug)]
pub struct Mapped {
    /// The action.
    pub action: EntityUid,
    /// The resource.
    pub resource: EntityUid,
    /// The route: `BUNDLE: [HOST] PATH`.
    pub route: String,
    /// The path's segments by name, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The normalized path.
    pub path: String,
}

/// Why a request has no route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No route's host and path match.
    Unmatched,
    /// A route matched, but names no action for the method.
    Method {
        /// The route.
        route: String,
    },
    /// The path is refused (step 1 of [`RouteTable::map`]).
    BadPath(String),
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoute::Unmatched => write!(f, "no route matches the request"),
            NoRoute::Method { route } => {
                write!(f, "route {route} has no action for the request's method")
            }
            NoRoute::BadPath(why) => write!(f, "the request's path is refused: {why}"),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    route: Arc<Route>,
    name: String,
}

/// Every bundle's routes, merged: what [`RouteTable::map`] matches against.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<String, matchit::Router<usize>>,
    any_host: matchit::Router<usize>,
    entries: Vec<Entry>,
    /// What a request that matches no route gets.
    pub unmatched: Unmatched,
    /// Header names copied into the context, lowercase.
    pub headers: BTreeSet<String>,
    /// Routes left out because an earlier bundle has their host and path.
    pub conflicts: Vec<String>,
}

impl RouteTable {
    /// Merges bundles' routes, in the order given (the view gives them in
    /// bundle name order).
    pub fn build<'a>(bundles: impl IntoIterator<Item = (&'a str, &'a BundleRoutes)>) -> Self {
        let mut table = RouteTable::default();
        let mut any_allow = false;
        let mut any_deny = false;
        for (bundle, routes) in bundles {
            match routes.unmatched {
                Some(Unmatched::Allow) => any_allow = true,
                Some(Unmatched::Deny) => any_deny = true,
                None => {}
            }
            table.headers.extend(routes.headers.iter().cloned());
            for route in &routes.routes {
                let name = format!(
                    "{bundle}: {}{}",
                    route.host.as_deref().unwrap_or(""),
                    route.path
                );
                let index = table.entries.len();
                match table.insert(route, index) {
                    Ok(()) => table.entries.push(Entry {
                        route: Arc::new(route.clone()),
                        name,
                    }),
                    Err(e) => table.conflicts.push(format!("{name}: {e}")),
                }
            }
        }
        table.unmatched = if any_allow && !any_deny {
            Unmatched::Allow
        } else {
            Unmatched::Deny
        };
        table
    }

    fn insert(&mut self, route: &Route, index: usize) -> Result<(), matchit::InsertError> {
        let router = match &route.host {
            Some(h) => self.by_host.entry(h.clone()).or_default(),
            None => &mut self.any_host,
        };
        router.insert(route.path.as_str(), index)
    }

    /// How many routes are in force.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no route is in force.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Maps a request to its action and resource (the steps are in the
    /// module doc).
    pub fn map(&self, req: &HttpRequest) -> Result<Mapped, NoRoute> {
        let (path, _query) = normal_path(&req.target).map_err(NoRoute::BadPath)?;
        let host = normal_host(&req.host);
        let hit = self
            .by_host
            .get(&host)
            .and_then(|r| r.at(&path).ok())
            .or_else(|| self.any_host.at(&path).ok())
            .ok_or(NoRoute::Unmatched)?;
        let entry = &self.entries[*hit.value];
        let method = req.method.to_ascii_uppercase();
        let action = entry
            .route
            .actions
            .get(&method)
            .or_else(|| entry.route.actions.get("*"))
            .ok_or_else(|| NoRoute::Method {
                route: entry.name.clone(),
            })?
            .clone();
        let mut params = Vec::with_capacity(hit.params.len());
        for (k, v) in hit.params.iter() {
            let decoded = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| NoRoute::BadPath(format!("segment {k} is not UTF-8 once decoded")))?;
            params.push((k.to_owned(), decoded.into_owned()));
        }
        let resource = entry
            .route
            .resource
            .fill(|slot| {
                params
                    .iter()
                    .find(|(k, _)| k == slot)
                    .map(|(_, v)| v.as_str())
            })
            .map_err(|slot| NoRoute::BadPath(format!("segment {slot} is missing")))?;
        Ok(Mapped {
            action,
            resource,
            route: entry.name.clone(),
            params,
            path: path.into_owned(),
        })
    }

    /// The `http` record of the request's context: method, path (as
    /// matched, when a route matched), query, host, client, the headers
    /// this table names, and the route's params.
    pub fn context(&self, req: &HttpRequest, mapped: Option<&Mapped>) -> RestrictedExpression {
        let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p, q.split('#').next().unwrap_or("")),
            None => (req.target.split('#').next().unwrap_or(""), ""),
        };
        let headers = self.headers.iter().filter_map(|name| {
            let values: Vec<&str> = req
                .headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| (name.clone(), string(&values.join(", "))))
        });
        let params = mapped
            .into_iter()
            .flat_map(|m| m.params.iter())
            .map(|(k, v)| (k.clone(), string(v)));
        let record = [
            (
                "method".to_owned(),
                string(&req.method.to_ascii_uppercase()),
            ),
            (
                "path".to_owned(),
                string(mapped.map_or(path, |m| m.path.as_str())),
            ),
            ("query".to_owned(), string(query)),
            ("host".to_owned(), string(&normal_host(&req.host))),
            (
                "client".to_owned(),
                string(req.client.as_deref().unwrap_or("")),
            ),
            (
                "headers".to_owned(),
                record_of(headers.collect::<BTreeMap<_, _>>()),
            ),
            (
                "params".to_owned(),
                record_of(params.collect::<BTreeMap<_, _>>()),
            ),
        ];
        record_of(record.into_iter().collect::<BTreeMap<_, _>>())
    }
}

fn record_of(fields: BTreeMap<String, RestrictedExpression>) -> RestrictedExpression {
    // Keys are unique (a map's), so building the record cannot fail.
    RestrictedExpression::new_record(fields)
        .unwrap_or_else(|_| RestrictedExpression::new_string(String::new()))
}

/// Step 1 of [`RouteTable::map`]: the normalized path and the query.
pub fn normal_path(target: &str) -> Result<(std::borrow::Cow<'_, str>, &str), String> {
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(format!("{path:?} does not start with /"));
    }
    if path.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
        return Err("it holds a backslash or a control character".into());
    }
    let lower = path.to_ascii_lowercase();
    for enc in ["%2f", "%5c", "%2e", "%00"] {
        if lower.contains(enc) {
            return Err(format!(
                "it holds an encoded {enc}, which upstreams read differently"
            ));
        }
    }
    if !path.contains("//") && !path.split('/').any(|s| s == "." || s == "..") {
        return Ok((std::borrow::Cow::Borrowed(path), query));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing = false;
    for (i, s) in segments.into_iter().enumerate() {
        match s {
            "" | "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = format!("/{}", out.join("/"));
    if trailing && !out.is_empty() {
        normal.push('/');
    }
    Ok((std::borrow::Cow::Owned(normal), query))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
headers = ["X-Tenant"]
[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"', PUT = 'Action::"edit"' }
[[route]]
host = "Admin.Example.com:443"
path = "/docs/{id}"
resource = 'Admin::"{id}"'
actions = { "*" = 'Action::"admin"' }
[[route]]
path = "/files/{*rest}"
resource = 'File::"{rest}"'
actions = { "*" = 'Action::"read"' }
"#;

    fn req(method: &str, host: &str, target: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            target: target.into(),
            host: host.into(),
            client: Some("10.0.0.9".into()),
            headers: vec![
                ("x-tenant".into(), "red".into()),
                ("cookie".into(), "s".into()),
            ],
        }
    }

    #[test]
    fn requests_map_to_actions_and_resources() {
        let routes = BundleRoutes::parse(FILE).unwrap();
        let t = RouteTable::build([("web", &routes)]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.unmatched, Unmatched::Deny);
        let m = t
            .map(&req("get", "docs.example.com", "/docs/a%20b?x=1"))
            .unwrap();
        assert_eq!(m.action.to_string(), r#"Action::"view""#);
        assert_eq!(m.resource.to_string(), r#"Doc::"a b""#);
        assert_eq!(m.route, "web: /docs/{id}");
        let admin = t
            .map(&req("DELETE", "admin.example.com", "/docs/7"))
            .unwrap();
        assert_eq!(admin.resource.to_string(), r#"Admin::"7""#);
        assert_eq!(
            t.map(&req("DELETE", "docs.example.com", "/docs/7"))
                .unwrap_err(),
            NoRoute::Method {
                route: "web: /docs/{id}".into()
            }
        );
        assert_eq!(
            t.map(&req("GET", "x", "/nothing")).unwrap_err(),
            NoRoute::Unmatched
        );
        // Dot segments are resolved before matching: this is /files/b.
        let f = t.map(&req("GET", "x", "/docs/../files/a/../b")).unwrap();
        assert_eq!(f.resource.to_string(), r#"File::"b""#);
        for bad in ["/docs/%2e%2e/admin", "/docs/a%2Fb", "docs/1", "/docs/a\\b"] {
            assert!(
                matches!(t.map(&req("GET", "x", bad)), Err(NoRoute::BadPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_context_holds_the_request_and_only_named_headers() {
        let routes = BundleRoutes::parse(FILE).unwrap();
        let t = RouteTable::build([("web", &routes)]);
        let r = req("get", "Docs.Example.com:8443", "/docs/1?q=2");
        let m = t.map(&r).unwrap();
        let ctx = cedar_policy::Context::from_pairs([("http".to_owned(), t.context(&r, Some(&m)))])
            .unwrap();
        let json = ctx.to_json_value().unwrap();
        let http = &json["http"];
        assert_eq!(http["method"], "GET");
        assert_eq!(http["path"], "/docs/1");
        assert_eq!(http["query"], "q=2");
        assert_eq!(http["host"], "docs.example.com");
        assert_eq!(http["client"], "10.0.0.9");
        assert_eq!(http["headers"]["x-tenant"], "red");
        assert!(http["headers"].get("cookie").is_none());
        assert_eq!(http["params"]["id"], "1");
    }

    #[test]
    fn bad_routes_files_are_refused_with_the_route_named() {
        for (text, needle) in [
            (
                "[[route]]\npath = \"docs\"\nresource = 'D::\"x\"'\nactions = { GET = 'A::\"v\"' }",
                "does not start with /",
            ),
            (
                "[[route]]\npath = \"/d/{id}\"\nresource = 'D::\"{other}\"'\nactions = { GET = 'A::\"v\"' }",
                "not a segment",
            ),
            (
                "[[route]]\npath = \"/d\"\nresource = 'D::\"x\"'\nactions = { get = 'A::\"v\"' }",
                "capitals",
            ),
            (
                "[[route]]\npath = \"/d\"\nresource = 'D::\"x\"'\nactions = { GET = 'view' }",
                "not a uid",
            ),
            (
                "[[route]]\npath = \"/d\"\nresource = 'D::\"x\"'\nactions = {}",
                "no actions",
            ),
            (
                "[[route]]\npath = \"/d\"\nresource = 'D::\"x\"'\nactions = { GET = 'A::\"v\"' }\n[[route]]\npath = \"/d\"\nresource = 'D::\"y\"'\nactions = { GET = 'A::\"v\"' }",
                "route 2",
            ),
            (
                "[[route]]\npath = \"/d\"\nresource = 'D::\"x\"'\nactions = { GET = 'A::\"v\"' }\nextra = 1",
                "unknown field",
            ),
            ("unmatched = \"maybe\"", "unknown variant"),
            ("headers = [\"a b\"]", "not a header name"),
        ] {
            let e = BundleRoutes::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn merging_keeps_the_first_bundle_and_deny_wins_the_default() {
        let a = BundleRoutes::parse(
            "unmatched = \"allow\"\n[[route]]\npath = \"/d\"\nresource = 'D::\"a\"'\nactions = { GET = 'A::\"v\"' }",
        )
        .unwrap();
        let b = BundleRoutes::parse(
            "[[route]]\npath = \"/d\"\nresource = 'D::\"b\"'\nactions = { GET = 'A::\"v\"' }",
        )
        .unwrap();
        let t = RouteTable::build([("a", &a), ("b", &b)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.conflicts.len(), 1);
        assert!(t.conflicts[0].starts_with("b: /d"), "{:?}", t.conflicts);
        assert_eq!(
            t.map(&req("GET", "h", "/d")).unwrap().resource.to_string(),
            r#"D::"a""#
        );
        assert_eq!(t.unmatched, Unmatched::Allow);
        let deny = BundleRoutes::parse("unmatched = \"deny\"").unwrap();
        assert_eq!(
            RouteTable::build([("a", &a), ("c", &deny)]).unmatched,
            Unmatched::Deny
        );
    }
}
