use crate::model::*;

fn errs(text: &str) -> Vec<String> {
    match parse_config(text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.field.clone()).collect(),
    }
}

#[test]
fn defaults_apply_to_an_empty_config() {
    let c = parse_config("{}").expect("valid");
    assert_eq!(c.listen, vec!["127.0.0.1:8080".parse().expect("addr")]);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.timeouts, Timeouts::default());
    assert!(c.admin.is_none());
}

#[test]
fn seed_route_shape_is_accepted() {
    let c = parse_config(
        r#"{"routes":[{ "id": "service-a", "vHost": "API.myapp.com.", "strategy": "ROUND_ROBIN",
  "autoHttps": false, "reqActiveLength": 50, "reqQueueLength": 100,
  "authProvider": null, "headers": {"X-Env": "prod"},
  "backends": [ {"id": "node-1", "hostname": "10.0.0.1", "port": 3000, "weight": 1} ],
  "ssl": null }]}"#,
    )
    .expect("valid");
    let r = &c.routes[0];
    assert_eq!(r.key, "api.myapp.com");
    assert_eq!(r.req_active, 50);
    assert_eq!(r.pool.backends[0].literal_addr(), Some("10.0.0.1:3000".parse().expect("addr")));
    assert_eq!(r.headers, vec![("X-Env".to_string(), "prod".to_string())]);
}

#[test]
fn every_error_names_its_field() {
    let e = errs(
        r#"{"routes":[{"vHost":"a.com","strategy":"FASTEST","backends":[
            {"hostname":"10.0.0.1","port":0},{"hostname":"bad host","port":80},{"id":"x","hostname":"h","port":1},{"id":"x","hostname":"h","port":2}],
            "ssl":{"cert":"x"}}]}"#,
    );
    assert!(e.contains(&"routes[0].strategy".to_string()), "{e:?}");
    assert!(e.contains(&"routes[0].backends[0].port".to_string()), "{e:?}");
    assert!(e.contains(&"routes[0].backends[1].hostname".to_string()), "{e:?}");
    assert!(e.contains(&"routes[0].backends[3].id".to_string()), "{e:?}");
    assert!(e.contains(&"routes[0].ssl".to_string()), "{e:?}");
}

#[test]
fn unknown_fields_and_wrong_types_are_named() {
    assert_eq!(errs(r#"{"routes":[{"vHost":"a","bogus":1}]}"#), vec!["routes[0].bogus".to_string()]);
    assert_eq!(errs(r#"{"limits":{"maxHeaders":"many"}}"#), vec!["limits.maxHeaders".to_string()]);
}

#[test]
fn vhost_patterns() {
    assert_eq!(VHost::parse("*"), Some(VHost::Any));
    assert_eq!(VHost::parse("*.Example.com"), Some(VHost::Wildcard("example.com".into())));
    assert_eq!(VHost::parse("a..b"), None);
    assert_eq!(VHost::parse("a b"), None);
    assert!(!errs(r#"{"routes":[{"vHost":"a.com"},{"vHost":"A.com"}]}"#).is_empty());
}

#[test]
fn admin_off_loopback_needs_a_token() {
    assert_eq!(errs(r#"{"admin":{"listen":"0.0.0.0:9901"}}"#), vec!["admin.token".to_string()]);
    assert!(errs(r#"{"admin":{"listen":"0.0.0.0:9901","token":"s"}}"#).is_empty());
}

#[test]
fn path_rules_share_the_route_id_space() {
    let e = errs(
        r#"{"routes":[{"vHost":"*","backends":[{"id":"a","hostname":"127.0.0.1","port":1}],
        "paths":[{"prefix":"/api/","backends":[{"id":"a","hostname":"127.0.0.1","port":2}]}]}]}"#,
    );
    assert_eq!(e, vec!["routes[0].paths[0].backends[0].id".to_string()]);
    let c =
        parse_config(r#"{"routes":[{"vHost":"*","paths":[{"prefix":"/api/","stripPrefix":true}]}]}"#).expect("valid");
    assert_eq!(c.routes[0].paths[0].prefix, "/api");
}

#[test]
fn health_override_is_field_by_field() {
    let c = parse_config(
        r#"{"health":{"path":"/hz","rise":5},"routes":[{"vHost":"*","health":{"fall":1,"intervalMs":0,"expectStatus":"200-204"}}]}"#,
    )
    .expect("valid");
    let h = &c.routes[0].health;
    assert_eq!((h.path.as_str(), h.rise, h.fall, h.interval, h.expect_status), ("/hz", 5, 1, None, (200, 204)));
}
