//! Host lookup on arbitrary Host values against exact, wildcard and
//! catch-all routes: never panics; a match is one of the routes; a host
//! that normalises to an exact route's name finds that route.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringway::router::normalise_host;
use ringway::worker::{Shared, Worker};

thread_local! {
    static WORKER: Worker = {
        let config = control::model::parse_config(
            r#"{"routes":[{"vHost":"a.example.com","backends":[]},{"vHost":"*.example.com","backends":[]},
                          {"vHost":"*","backends":[]}]}"#,
        )
        .expect("config");
        let snap = control::messages::Snapshot {
            generation: 1,
            routes: config.routes.into_iter().map(std::sync::Arc::new).collect(),
            resolved: Vec::new(),
            down: Default::default(),
            timeouts: config.timeouts,
            limits: config.limits,
            http2: config.http2,
            tls: None,
        };
        let (tx, _rx) = crossbeam_channel::unbounded();
        let w = Worker::new(0, tx, Arc::new(Shared::default()), 1, None);
        w.apply(&snap);
        w
    };
}

fuzz_target!(|host: &[u8]| {
    WORKER.with(|w| {
        let active = w.active();
        let found = active.router.lookup(Some(host)).map(|r| r.key.to_string());
        let mut buf = [0u8; 255];
        if normalise_host(host, &mut buf) == Some(&b"a.example.com"[..]) {
            assert_eq!(found.as_deref(), Some("a.example.com"));
        }
        assert!(found.is_some(), "the catch-all matches everything");
    });
});
