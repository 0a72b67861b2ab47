//! The admin page's files as served: open without a token, with their content types and the
//! headers that keep API data from running as script. What the page does is tested in a real
//! browser by scripts/browser-test.

use reqwest::{Method, StatusCode};

use crate::common::{data_dir, Api, Server};

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_a_token_and_with_a_strict_policy() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("ADMIN_TOKEN", "admin-secret")]);
    let anon = Api::new(&server);
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<script src=\"/admin/app.js\""),
        ("/admin/app.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("/admin/app.css", "text/css; charset=utf-8", "@media"),
    ] {
        let response = anon.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let policy = header("content-security-policy");
        assert!(policy.starts_with("default-src 'self'; script-src 'self'; style-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    // No inline script or style for the policy to refuse: the page would break silently.
    let page = anon.request(Method::GET, "/").send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains(" style="), "{page}");
    // Documents in backups are anyone's writing: the script renders text, never markup.
    let script = anon.request(Method::GET, "/admin/app.js").send().await.unwrap().text().await.unwrap();
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
        assert!(!script.contains(sink), "app.js uses {sink}");
    }
    // The page is open; the data is not.
    let (status, body) = anon.get("/api/backups").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = anon.with_token("admin-secret").get("/api/backups").await;
    assert_eq!(status, StatusCode::OK);
}
