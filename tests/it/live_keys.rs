//! Live key sets against a real HTTPS identity provider (`idp.rs`): discovery, rotation, unknown-`kid` floods,
//! outages, bounds and mix-ups. Every refusal has its allowed twin.

use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use scopegate::credential::jwt::{HttpsFetcher, JwtAuthenticator, KeyRefresh};
use scopegate::policy::DenialKind;
use scopegate::{Clock, ManualClock, SystemClock};

use crate::idp::{ALGORITHM, Idp, Mode};

const AUD: &str = "orders-api";

fn fetcher(idp: &Idp) -> HttpsFetcher {
    HttpsFetcher::builder()
        .ca_pem(idp.ca_pem())
        .timeout(Duration::from_secs(2))
        .max_bytes(64 * 1024)
        .build()
        .unwrap()
}

fn now_clock() -> ManualClock {
    ManualClock::new(SystemClock.now())
}

/// Unknown `kid`s fetch at most every 10 s; the background refresh (5 min) stays out of the way.
fn refresh() -> KeyRefresh {
    KeyRefresh::new()
        .interval(Duration::from_secs(300))
        .unknown_kid_cooldown(Duration::from_secs(10))
        .max_stale(Duration::from_secs(600))
}

fn discovered(idp: &Idp, refresh: KeyRefresh, clock: impl Clock) -> JwtAuthenticator {
    JwtAuthenticator::builder()
        .algorithms([ALGORITHM])
        .issuer(idp.issuer())
        .audience(AUD)
        .discovery(&fetcher(idp))
        .key_refresh(refresh)
        .clock(clock)
        .build()
        .unwrap()
}

/// A token naming `kid` whose signature is never checked (no key has that `kid`).
fn unknown_kid_token(issuer: &str, kid: &str) -> String {
    let header = serde_json::json!({"alg": ALGORITHM.as_str(), "kid": kid});
    let exp = SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = serde_json::json!({"iss": issuer, "aud": AUD, "sub": "flood", "exp": exp});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

#[tokio::test]
async fn discovery_finds_the_key_set_and_only_its_keys_verify() {
    let idp = Idp::start("k1", AUD).await;
    let a = discovered(&idp, refresh(), SystemClock);
    let token = idp.token("svc-billing", &["orders:read"]);
    let grant = a.authenticate(&token).await.unwrap();
    assert_eq!(grant.principal(), "svc-billing");
    assert!(a.authenticate(&token).await.is_ok());
    assert_eq!(idp.discovery_fetches(), 1, "the jwks_uri is remembered");
    assert_eq!(idp.jwks_fetches(), 1);
    // Refused: the same token with its signature changed.
    let forged = crate::tamper_signature(&token);
    assert_eq!(
        a.authenticate(&forged).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
}

#[tokio::test]
async fn rfc_8414_metadata_is_the_fallback_and_no_metadata_is_unavailable() {
    let idp = Idp::start("k1", AUD).await;
    idp.set_discovery(false, true);
    let a = discovered(&idp, refresh(), SystemClock);
    assert!(a.authenticate(&idp.token("s", &[])).await.is_ok());
    assert_eq!(
        idp.discovery_fetches(),
        2,
        "OpenID's document (404), then RFC 8414's"
    );

    let idp = Idp::start("k1", AUD).await;
    idp.set_discovery(false, false);
    let a = discovered(&idp, refresh(), SystemClock);
    let denial = a.authenticate(&idp.token("s", &[])).await.unwrap_err();
    assert_eq!(denial.kind(), DenialKind::Unavailable, "{denial:?}");
    let err = a.refresh_keys().await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
}

#[tokio::test]
async fn plain_http_key_sets_are_refused_at_build() {
    let idp = Idp::start("k1", AUD).await;
    let builder = || {
        JwtAuthenticator::builder()
            .algorithms([ALGORITHM])
            .issuer(idp.issuer())
            .audience(AUD)
    };
    let http = idp.jwks_url().replace("https://", "http://");
    let err = builder()
        .jwks_url(&fetcher(&idp), &http)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jwks_url") && err.contains("https://"),
        "{err}"
    );
    let err = JwtAuthenticator::builder()
        .algorithms([ALGORITHM])
        .issuer(idp.issuer().replace("https://", "http://"))
        .audience(AUD)
        .discovery(&fetcher(&idp))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("https://"), "{err}");
    // Allowed twin: the https:// URL.
    let a = builder()
        .jwks_url(&fetcher(&idp), &idp.jwks_url())
        .build()
        .unwrap();
    assert!(a.authenticate(&idp.token("s", &[])).await.is_ok());
}

#[tokio::test]
async fn refresh_settings_out_of_bounds_are_refused() {
    let idp = Idp::start("k1", AUD).await;
    for (bad, field) in [
        (
            KeyRefresh::new().interval(Duration::ZERO),
            "refresh_seconds",
        ),
        (
            KeyRefresh::new().unknown_kid_cooldown(Duration::ZERO),
            "unknown_kid_cooldown_seconds",
        ),
        (
            KeyRefresh::new()
                .interval(Duration::from_secs(600))
                .max_stale(Duration::from_secs(599)),
            "max_stale_seconds",
        ),
    ] {
        let err = JwtAuthenticator::builder()
            .algorithms([ALGORITHM])
            .issuer(idp.issuer())
            .audience(AUD)
            .discovery(&fetcher(&idp))
            .key_refresh(bad)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[tokio::test]
async fn a_new_kid_is_fetched_once_per_cooldown_and_a_removed_key_stops_verifying() {
    let idp = Idp::start("k1", AUD).await;
    let clock = now_clock();
    let a = discovered(&idp, refresh(), clock.clone());
    let old = idp.token("s", &[]);
    assert!(a.authenticate(&old).await.is_ok());
    idp.rotate("k2");
    let new = idp.token("s", &[]);
    // Within the cooldown of the first fetch the new kid is not fetched.
    assert_eq!(
        a.authenticate(&new).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
    assert_eq!(idp.jwks_fetches(), 1);
    clock.advance(Duration::from_secs(10));
    assert!(a.authenticate(&new).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 2);
    // The fetched set replaced the old one: k1 is gone, and its cached token with it.
    assert_eq!(
        a.authenticate(&old).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresh_picks_up_a_rotation() {
    let idp = Idp::start("k1", AUD).await;
    let every_second = KeyRefresh::new()
        .interval(Duration::from_secs(1))
        .unknown_kid_cooldown(Duration::from_secs(1))
        .max_stale(Duration::from_secs(60));
    let a = discovered(&idp, every_second, SystemClock);
    let old = idp.token("s", &[]);
    assert!(a.authenticate(&old).await.is_ok());
    idp.rotate("k2");
    let new = idp.token("s", &[]);
    // `verify` never fetches: only the background refresh can teach it k2.
    assert!(a.verify(&new).is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.verify(&new).is_err() {
        assert!(Instant::now() < deadline, "the rotation was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        a.verify(&old).unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_within_bounds_replaces_the_interval() {
    let every_second = KeyRefresh::new()
        .interval(Duration::from_secs(1))
        .unknown_kid_cooldown(Duration::from_secs(1))
        .max_stale(Duration::from_secs(60));
    // Honoured: an hour's max-age, so no refresh within the next seconds.
    let idp = Idp::start("k1", AUD).await;
    idp.set_cache_control(Some("public, max-age=3600"));
    let a = discovered(&idp, every_second, SystemClock);
    assert!(a.authenticate(&idp.token("s", &[])).await.is_ok());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(idp.jwks_fetches(), 1);
    // Ignored: 30 s is below the 60 s floor, so the one-second interval stands.
    let idp = Idp::start("k1", AUD).await;
    idp.set_cache_control(Some("max-age=30"));
    let a = discovered(&idp, every_second, SystemClock);
    assert!(a.authenticate(&idp.token("s", &[])).await.is_ok());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(idp.jwks_fetches() >= 2, "{}", idp.jwks_fetches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_cooldown() {
    let idp = Idp::start("k1", AUD).await;
    let clock = now_clock();
    let a = discovered(&idp, refresh(), clock.clone());
    let flood = |round: usize| {
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let a = a.clone();
                let token = unknown_kid_token(idp.issuer(), &format!("flood-{round}-{i}"));
                tokio::spawn(async move { a.authenticate(&token).await })
            })
            .collect();
        async move {
            for task in tasks {
                let denial = task.await.unwrap().unwrap_err();
                assert_eq!(denial.kind(), DenialKind::InvalidCredential, "{denial:?}");
            }
        }
    };
    // A cold gate: 1,000 concurrent requests share the one first fetch.
    flood(0).await;
    assert_eq!(idp.jwks_fetches(), 1);
    // Within the cooldown: none.
    flood(1).await;
    assert_eq!(idp.jwks_fetches(), 1);
    clock.advance(Duration::from_secs(10));
    flood(2).await;
    assert_eq!(idp.jwks_fetches(), 2);
    // A real token is still served from the set at hand.
    assert!(a.authenticate(&idp.token("s", &[])).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_failing_provider_is_stale_then_unavailable_then_recovers() {
    let idp = Idp::start("k1", AUD).await;
    let clock = now_clock();
    // Stale after two minutes (the tokens live five, on the provider's clock).
    let stale_after_2_min = KeyRefresh::new()
        .interval(Duration::from_secs(60))
        .unknown_kid_cooldown(Duration::from_secs(10))
        .max_stale(Duration::from_secs(120));
    let a = discovered(&idp, stale_after_2_min, clock.clone());
    let token = idp.token("s", &[]);
    assert!(a.authenticate(&token).await.is_ok());
    idp.set_mode(Mode::Fail);
    clock.advance(Duration::from_secs(61));
    let err = a.refresh_keys().await.unwrap_err().to_string();
    assert!(err.contains("500"), "{err}");
    // Stale while failing: the known key still verifies...
    assert!(a.authenticate(&token).await.is_ok());
    // ...but a kid the set lacks might be the provider's new key: unavailable, never a silent 401.
    let unknown = unknown_kid_token(idp.issuer(), "new");
    assert_eq!(
        a.authenticate(&unknown).await.unwrap_err().kind(),
        DenialKind::Unavailable
    );
    // Past max_stale: every token of this issuer is unavailable.
    clock.advance(Duration::from_secs(60));
    let fetches = idp.jwks_fetches();
    assert_eq!(
        a.authenticate(&token).await.unwrap_err().kind(),
        DenialKind::Unavailable
    );
    assert_eq!(
        idp.jwks_fetches(),
        fetches + 1,
        "a stale issuer is retried on demand"
    );
    assert_eq!(
        a.verify(&token).unwrap_err().kind(),
        DenialKind::Unavailable
    );
    // The provider comes back: the next request after the cooldown fetches and is served, without a restart.
    idp.set_mode(Mode::Normal);
    clock.advance(Duration::from_secs(10));
    assert!(a.authenticate(&token).await.is_ok());
}

#[tokio::test]
async fn bad_answers_are_failed_fetches_and_the_bounds_hold() {
    for mode in [
        Mode::Garbage,
        Mode::Oversized(128 * 1024),
        Mode::RedirectCrossOrigin,
        Mode::Fail,
    ] {
        let idp = Idp::start("k1", AUD).await;
        idp.set_mode(mode);
        let a = discovered(&idp, refresh(), SystemClock);
        let denial = a.authenticate(&idp.token("s", &[])).await.unwrap_err();
        assert_eq!(denial.kind(), DenialKind::Unavailable, "{mode:?}");
        if mode == Mode::RedirectCrossOrigin {
            assert_eq!(idp.redirect_fetches(), 0, "the other origin was not asked");
        }
    }
    // Allowed twins: a redirect within the origin, and a padded document under the bound.
    for mode in [Mode::RedirectSameOrigin, Mode::Oversized(32 * 1024)] {
        let idp = Idp::start("k1", AUD).await;
        idp.set_mode(mode);
        let a = discovered(&idp, refresh(), SystemClock);
        assert!(
            a.authenticate(&idp.token("s", &[])).await.is_ok(),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn a_stalled_provider_costs_at_most_the_timeout() {
    let idp = Idp::start("k1", AUD).await;
    idp.set_mode(Mode::Stall);
    let a = discovered(&idp, refresh(), SystemClock);
    let started = Instant::now();
    let denial = a.authenticate(&idp.token("s", &[])).await.unwrap_err();
    assert_eq!(denial.kind(), DenialKind::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = a.refresh_keys().await.unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test]
async fn a_metadata_document_naming_another_issuer_is_refused() {
    let idp = Idp::start("k1", AUD).await;
    idp.set_metadata_issuer("https://evil.example");
    let a = discovered(&idp, refresh(), SystemClock);
    let denial = a.authenticate(&idp.token("s", &[])).await.unwrap_err();
    assert_eq!(denial.kind(), DenialKind::Unavailable);
    let err = a.refresh_keys().await.unwrap_err().to_string();
    assert!(err.contains("mix-up"), "{err}");
    assert_eq!(idp.jwks_fetches(), 0, "no key set was fetched");
    // Twin: the exact issuer.
    idp.set_metadata_issuer(idp.issuer());
    assert!(a.refresh_keys().await.unwrap());
    assert!(a.authenticate(&idp.token("s", &[])).await.is_ok());
}

#[tokio::test]
async fn issuers_never_share_keys_even_when_their_kids_collide() {
    let acme = Idp::start("k1", AUD).await;
    let globex = Idp::start("k1", AUD).await;
    let a = JwtAuthenticator::by_issuer([
        discovered(&acme, refresh(), SystemClock),
        discovered(&globex, refresh(), SystemClock),
    ])
    .unwrap();
    let from_acme = acme.token("acme-svc", &[]);
    let from_globex = globex.token("globex-svc", &[]);
    assert_eq!(
        a.authenticate(&from_acme).await.unwrap().principal(),
        "acme-svc"
    );
    assert_eq!(
        a.authenticate(&from_globex).await.unwrap().principal(),
        "globex-svc"
    );
    // Globex's key (kid k1) signs a token claiming to be acme's: acme's k1 does not verify it.
    let forged = globex.token_claiming(acme.issuer(), "intruder", &[]);
    assert_eq!(
        a.authenticate(&forged).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
    // An issuer no entry names.
    let stranger = unknown_kid_token("https://stranger.example", "k1");
    assert_eq!(
        a.authenticate(&stranger).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
    // Refused combinations.
    let twice = JwtAuthenticator::by_issuer([
        discovered(&acme, refresh(), SystemClock),
        discovered(&acme, refresh(), SystemClock),
    ]);
    assert!(twice.unwrap_err().to_string().contains("two entries"));
}

#[tokio::test]
async fn one_issuer_down_leaves_the_other_served() {
    let up = Idp::start("k1", AUD).await;
    let down = Idp::start("k1", AUD).await;
    down.set_mode(Mode::Fail);
    let a = JwtAuthenticator::by_issuer([
        discovered(&up, refresh(), SystemClock),
        discovered(&down, refresh(), SystemClock),
    ])
    .unwrap();
    assert!(a.authenticate(&up.token("s", &[])).await.is_ok());
    assert_eq!(
        a.authenticate(&down.token("s", &[]))
            .await
            .unwrap_err()
            .kind(),
        DenialKind::Unavailable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_does_not_waste_the_fetch_it_started() {
    let idp = Idp::start("k1", AUD).await;
    idp.set_mode(Mode::Stall);
    let clock = now_clock();
    let a = discovered(&idp, refresh(), clock.clone());
    let token = idp.token("s", &[]);
    // The request gives up (a client hanging up, an outer timeout) while the fetch it started is stalled.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a.authenticate(&token))
            .await
            .is_err()
    );
    // The provider answers: the fetch, still running, completes and is not counted against a later one.
    idp.set_mode(Mode::Normal);
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.verify(&token).is_err() {
        assert!(
            Instant::now() < deadline,
            "the abandoned fetch did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn symmetric_algorithms_need_a_local_key_set() {
    let idp = Idp::start("k1", AUD).await;
    let err = JwtAuthenticator::builder()
        .algorithms([ALGORITHM, scopegate::credential::jwt::Algorithm::HS256])
        .issuer(idp.issuer())
        .audience(AUD)
        .discovery(&fetcher(&idp))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("algorithms") && err.contains("HS256"), "{err}");
    // Twin: the asymmetric algorithm alone.
    assert!(
        discovered(&idp, refresh(), SystemClock)
            .authenticate(&idp.token("s", &[]))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_key_set_put_in_by_hand_is_replaced_by_the_next_fetch() {
    let idp = Idp::start("k1", AUD).await;
    let a = discovered(&idp, refresh(), SystemClock);
    let token = idp.token("s", &[]);
    assert!(a.authenticate(&token).await.is_ok());
    let other = Idp::start("k9", AUD).await;
    assert!(a.replace_key_set(
        scopegate::credential::jwt::KeySet::from_jwks_json(other.jwks_json().as_bytes()).unwrap()
    ));
    assert!(a.verify(&token).is_err());
    // The provider's document did not change, but the fetch replaces the hand-made set all the same.
    assert!(a.refresh_keys().await.unwrap());
    assert!(a.verify(&token).is_ok());
}
