//! What `checks/pages` (headless Chromium, axe-core) found in the pages, held here
//! without a browser: a failed form says so in its title and marks the fields it
//! concerns, and form controls stand out from the panel (WCAG 1.4.11, 3:1) in both
//! themes.

use crate::browser::{Browser, form_action, input_value};
use crate::login::{CLIENT_ID, REDIRECT_URI, password_db_config};
use crate::support::TestServer;

fn auth_url(server: &TestServer) -> String {
    format!(
        "{}/auth?client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&response_type=code&scope=openid&state=s",
        server.issuer()
    )
}

fn title(html: &str) -> &str {
    let start = html.find("<title>").expect("a <title>") + "<title>".len();
    let end = html[start..].find("</title>").expect("</title>") + start;
    &html[start..end]
}

/// The `<input …>` tag with this id.
fn input_tag<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("<input id=\"{id}\""))
        .unwrap_or_else(|| panic!("no input #{id} in:\n{html}"));
    let end = html[at..].find('>').unwrap() + at;
    &html[at..=end]
}

#[tokio::test]
async fn failed_password_login_is_named_in_the_title_and_marks_both_fields() {
    let server = TestServer::start_at_issuer(password_db_config).await;
    let browser = Browser::new(&server.base());
    let (_, status, form) = browser.follow(&auth_url(&server)).await.page();
    assert_eq!(status, 200);
    assert!(!title(&form).starts_with("Error"), "{}", title(&form));
    assert!(!form.contains("aria-invalid"), "{form}");

    let csrf = input_value(&form, "csrf_token");
    let failed = browser
        .post_form(
            &form_action(&form),
            &[
                ("login", "admin@example.com"),
                ("password", "not the password"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(failed.status(), 401);
    let page = failed.text().await.unwrap();
    assert!(
        title(&page).starts_with("Error: Log in"),
        "{}",
        title(&page)
    );
    for id in ["login", "password"] {
        let tag = input_tag(&page, id);
        assert!(tag.contains("aria-invalid=\"true\""), "{tag}");
        assert!(tag.contains("aria-describedby=\"login-error\""), "{tag}");
    }
    assert!(page.contains("id=\"login-error\""), "{page}");
}

#[tokio::test]
async fn invalid_device_code_is_named_in_the_title() {
    let server = TestServer::start_at_issuer(password_db_config).await;
    let browser = Browser::new(&server.base());
    let (_, status, form) = browser
        .follow(&format!("{}/device", server.issuer()))
        .await
        .page();
    assert_eq!(status, 200);
    assert!(
        title(&form).starts_with("Connect a device"),
        "{}",
        title(&form)
    );

    let csrf = input_value(&form, "csrf_token");
    let failed = browser
        .post_form(
            &form_action(&form),
            &[("user_code", "BCDF-GHJK"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(failed.status(), 400);
    let page = failed.text().await.unwrap();
    assert!(
        title(&page).starts_with("Error: Connect a device"),
        "{}",
        title(&page)
    );
    assert!(
        input_tag(&page, "user_code").contains("aria-invalid=\"true\""),
        "{page}"
    );
}

/// `--name: #rrggbb` in the first block of `css` that starts with `selector {`.
fn css_var(css: &str, selector: &str, name: &str) -> [u8; 3] {
    let block_at = css
        .find(&format!("{selector} {{"))
        .unwrap_or_else(|| panic!("no {selector} block"));
    let block = &css[block_at..block_at + css[block_at..].find('}').unwrap()];
    let at = block
        .find(&format!("{name}:"))
        .unwrap_or_else(|| panic!("no {name} in {selector}"));
    let hex = block[at + name.len() + 1..].trim_start();
    let hex = hex.strip_prefix('#').expect("a #rrggbb colour");
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
    [byte(0), byte(2), byte(4)]
}

/// WCAG 2.x contrast ratio.
fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let luminance = |c: [u8; 3]| {
        let lin = |v: u8| {
            let s = f64::from(v) / 255.0;
            if s <= 0.03928 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    };
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// The variable a declaration like `border: 1px solid var(--x)` or
/// `border-color: var(--x)` in the rule for `selector` draws the border with.
fn border_var<'a>(css: &'a str, selector: &str) -> &'a str {
    let rule_at = css
        .find(&format!("{selector} {{"))
        .or_else(|| css.find(&format!("{selector},")))
        .unwrap_or_else(|| panic!("no rule for {selector}"));
    let rule = &css[rule_at..rule_at + css[rule_at..].find('}').unwrap()];
    let border = rule
        .find("border:")
        .or_else(|| rule.find("border-color:"))
        .unwrap_or_else(|| panic!("no border in {rule}"));
    let var_at = rule[border..].find("var(").unwrap() + border + "var(".len();
    let end = rule[var_at..].find(')').unwrap() + var_at;
    &rule[var_at..end]
}

#[tokio::test]
async fn form_controls_stand_out_from_the_panel_in_both_themes() {
    let server = TestServer::start_at_issuer(password_db_config).await;
    let browser = Browser::new(&server.base());
    let (_, _, page) = browser.follow(&auth_url(&server)).await.page();
    let css_at = page.find("<style>").unwrap();
    let css = &page[css_at..css_at + page[css_at..].find("</style>").unwrap()];

    for selector in ["input[type=text], input[type=password]", "button.secondary"] {
        let line = border_var(css, selector);
        for theme in [":root", "body.theme-dark"] {
            let ratio = contrast(css_var(css, theme, line), css_var(css, theme, "--panel"));
            assert!(
                ratio >= 3.0,
                "{selector} border {line} has {ratio:.2}:1 against the panel in {theme}"
            );
        }
    }
}
