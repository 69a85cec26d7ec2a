//! Property tests of the policy engine's safety properties.

use std::collections::BTreeSet;

use http::Method;
use proptest::prelude::*;
use scopegate::policy::{Policy, Requirement, Route, Scope, ScopeSet, check_path};
use scopegate::testing::Probe;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "v1", "users", "me", "x.y", "%20"]).prop_map(str::to_owned)
}

fn static_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 1..4), any::<bool>())
        .prop_map(|(segs, slash)| format!("/{}{}", segs.join("/"), if slash { "/" } else { "" }))
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(METHODS.to_vec())
}

proptest! {
    /// Any request whose method and path the policy does not list is denied, whatever the credential grants —
    /// even a superuser.
    #[test]
    fn unlisted_routes_are_denied(
        listed in prop::collection::btree_set((method(), static_path()), 0..8),
        request in (prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]), static_path()),
        superuser in any::<bool>(),
    ) {
        let policy = Policy::builder()
            .routes(listed.iter().map(|(m, p)| Route::new([*m], p.clone()).require_all(["s:read"])))
            .build()
            .unwrap();
        let (req_method, req_path) = request;
        let effective = if req_method == "HEAD" { "GET" } else { req_method };
        let is_listed = listed.contains(&(effective, req_path.clone()));
        let mut probe = Probe::new(Method::from_bytes(req_method.as_bytes()).unwrap(), req_path).scopes(["s:read"]);
        if superuser {
            probe = probe.danger_superuser();
        }
        let decision = policy.check(&probe);
        if is_listed {
            // The twin: a listed route with the right scope is allowed.
            prop_assert!(decision.is_allowed(), "listed request denied: {decision:?}");
        } else {
            prop_assert!(!decision.is_allowed(), "unlisted request allowed: {decision:?}");
        }
    }
}

fn scope_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a:r", "a:w", "a:x:r", "b:r", "b:w", "c"]).prop_map(str::to_owned)
}

fn granted_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        scope_name(),
        prop::sample::select(vec!["a:*", "a:x:*", "b:*"]).prop_map(str::to_owned)
    ]
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let leaf = scope_name().prop_map(|s| Requirement::scope(&s).unwrap());
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| Requirement::all(v).unwrap()),
            prop::collection::vec(inner, 1..4).prop_map(|v| Requirement::any(v).unwrap()),
        ]
    })
}

proptest! {
    /// Removing a scope from a grant never turns a deny into an allow (requirements are monotone), checked through
    /// the whole decision.
    #[test]
    fn removing_a_scope_never_allows_more(
        req in requirement(),
        grant in prop::collection::btree_set(granted_scope(), 0..6),
    ) {
        let policy = Policy::builder().route(Route::get("/r").require(req.clone())).build().unwrap();
        let full = policy.check(&Probe::get("/r").scopes(grant.clone()).authenticated());
        for removed in &grant {
            let fewer: BTreeSet<String> = grant.iter().filter(|s| *s != removed).cloned().collect();
            let reduced = policy.check(&Probe::get("/r").scopes(fewer.clone()).authenticated());
            prop_assert!(
                !reduced.is_allowed() || full.is_allowed(),
                "removing {removed} turned {full:?} into {reduced:?} for {req}"
            );
            // The same, on the scope set directly.
            let set = ScopeSet::parse(&grant).unwrap();
            let smaller = set.without(&Scope::parse(removed).unwrap());
            prop_assert!(!req.is_satisfied_by(&smaller) || req.is_satisfied_by(&set));
        }
    }
}

fn word() -> impl Strategy<Value = String> {
    "[a-c]{1,3}(:[a-c]{1,3}){0,2}"
}

proptest! {
    /// A wildcard `p:*` covers exactly the scopes that continue `p` past a `:` boundary.
    #[test]
    fn wildcards_stop_at_segment_boundaries(prefix in word(), required in "[a-c:]{1,10}") {
        let Ok(required) = Scope::parse_required(&required) else { return Ok(()); };
        let wildcard = Scope::parse(&format!("{prefix}:*")).unwrap();
        let boundary = format!("{prefix}:");
        let expected = required.as_str().starts_with(&boundary) && required.as_str().len() > boundary.len();
        prop_assert_eq!(wildcard.covers(&required), expected, "{} vs {}", wildcard, required);
        // Never across a boundary: `prefix` followed by anything but ':' is not covered.
        if let Some(rest) = required.as_str().strip_prefix(prefix.as_str())
            && !rest.starts_with(':')
        {
            prop_assert!(!wildcard.covers(&required));
        }
    }

    /// Path canonicalisation never panics, and an accepted path has one reading.
    #[test]
    fn accepted_paths_have_one_reading(path in "/[a-z./%0-9A-F\\\\]{0,16}") {
        if check_path(&path).is_ok() {
            prop_assert!(!path.contains("//"));
            for seg in path[1..].split('/') {
                prop_assert!(seg != "." && seg != "..");
            }
            let lower = path.to_ascii_lowercase();
            for bad in ["%2e", "%2f", "%5c", "%25", "%00", "\\"] {
                prop_assert!(!lower.contains(bad), "{path} accepted with {bad}");
            }
        }
    }
}
