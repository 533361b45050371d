//! The admin API's JSON handling, transport-free: arbitrary bodies sent to
//! every writing endpoint never panic, and an error leaves the state as it
//! was. Also the config-file parser on arbitrary text.
#![no_main]
use control::api::{handle, ApiContext, ApiRequest, CertMeta, Outcome};
use control::model::{parse_config, RouteDefaults};
use control::state::State;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (which, body) = input;
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse_config(text);
    }
    let config = parse_config(r#"{"routes":[{"vHost":"a.test","backends":[{"hostname":"127.0.0.1","port":1}]}]}"#)
        .expect("seed config");
    let state = State::new(config.routes.clone());
    let defaults = RouteDefaults::of(&config);
    let sc = serde_json::json!({});
    let no_certs = |_: &str, _: &str| -> Result<CertMeta, (&'static str, String)> { Err(("cert", "no".into())) };
    let ctx = ApiContext {
        defaults: &defaults,
        static_config: &sc,
        check_certificate: &no_certs,
        static_certificates: &[],
        acme: None,
    };
    let (method, path) = match which % 6 {
        0 => ("POST", "/api/v1/routes"),
        1 => ("PUT", "/api/v1/routes/a.test"),
        2 => ("POST", "/api/v1/routes/a.test/backends"),
        3 => ("POST", "/api/v1/certificates"),
        4 => ("DELETE", "/api/v1/routes/a.test/backends/127.0.0.1:1"),
        _ => ("POST", "/api/v1/routes/a.test/backends/127.0.0.1:1/dead"),
    };
    let req = ApiRequest { method, path, query: "", body, content_type: Some("application/json"), if_match: None };
    let before = state.to_json();
    match handle(&state, &ctx, &req) {
        Outcome::Reply(r) if r.status >= 400 => assert_eq!(state.to_json(), before),
        _ => {}
    }
});
