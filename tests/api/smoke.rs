use crate::helpers::{client, TestApp};

#[test]
fn health_answers_ok_on_a_fresh_server() {
    let app = TestApp::spawn();
    let res = client().get(format!("{}/health", app.url)).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().unwrap(), "ok\n");
}
