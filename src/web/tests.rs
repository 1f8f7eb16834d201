use super::*;

fn frontend() -> FrontendSettings {
    FrontendSettings {
        dir: None,
        theme: String::new(),
        issuer_display_name: "Example SSO".to_owned(),
        logo_url: String::new(),
        extra: BTreeMap::new(),
    }
}

fn builtin() -> Templates {
    Templates::load(&frontend()).unwrap()
}

fn password_page() -> PasswordPage {
    PasswordPage {
        post_url: "/auth/local/login?state=abc&back=".to_owned(),
        prompt: "Email Address".to_owned(),
        username: String::new(),
        invalid: false,
        back_link: Some("/auth?client_id=x&scope=openid".to_owned()),
        csrf_token: "tok-123".to_owned(),
        remember_me: None,
    }
}

fn approval_page() -> ApprovalPage {
    ApprovalPage {
        client_name: "Grafana".to_owned(),
        username: "Jane".to_owned(),
        scopes: ["openid", "profile", "email", "groups", "offline_access"]
            .map(String::from)
            .to_vec(),
        post_url: "/approval?req=r1&hmac=h1".to_owned(),
        csrf_token: "tok-456".to_owned(),
    }
}

fn write(dir: &Path, rel: &str, contents: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

#[test]
fn login_page_lists_connectors_as_links() {
    let html = builtin().login(&LoginPage {
        connectors: vec![
            ConnectorLink {
                id: "forgejo".into(),
                name: "Forgejo".into(),
                kind: "gitea".into(),
                url: "/auth/forgejo?client_id=grafana&state=s".into(),
            },
            ConnectorLink {
                id: "local".into(),
                name: "Email".into(),
                kind: "local".into(),
                url: "/auth/local?client_id=grafana&state=s".into(),
            },
        ],
    });
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("Log in with Forgejo"), "{html}");
    assert!(html.contains("Log in with Email"), "{html}");
    // `&` escaped in the attribute, `/` may be escaped too: both decode to the URL.
    assert!(html.contains("client_id=grafana&amp;state=s"), "{html}");
    assert!(html.contains("Example SSO"), "{html}");
    assert!(html.contains("<style>"), "stylesheet is inlined: {html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.find("Forgejo") < html.find("Log in with Email"),
        "order kept"
    );
}

#[test]
fn password_page_has_fields_labels_csrf_and_back_link() {
    let html = builtin().password(&password_page());
    assert!(html.contains(r#"<form method="post""#), "{html}");
    assert!(html.contains(r#"name="login""#), "{html}");
    assert!(html.contains(r#"name="password""#), "{html}");
    assert!(
        html.contains(r#"<label for="login">Email Address</label>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<label for="password">Password</label>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<input type="hidden" name="csrf_token" value="tok-123">"#),
        "{html}"
    );
    assert!(html.contains("Choose another login method"), "{html}");
    assert!(!html.contains("Invalid"), "{html}");
}

#[test]
fn password_page_error_and_default_prompt() {
    let html = builtin().password(&PasswordPage {
        prompt: String::new(),
        username: "jane".into(),
        invalid: true,
        back_link: None,
        ..password_page()
    });
    assert!(html.contains("Invalid Username and password."), "{html}");
    assert!(
        html.contains(r#"<label for="login">Username</label>"#),
        "{html}"
    );
    assert!(html.contains(r#"value="jane""#), "{html}");
    assert!(html.contains(r#"role="alert""#), "{html}");
    assert!(!html.contains("Choose another login method"), "{html}");
}

#[test]
fn approval_page_shows_client_user_sorted_scope_descriptions_and_two_forms() {
    let html = builtin().approval(&approval_page());
    assert!(html.contains("Grafana"), "{html}");
    assert!(html.contains("Jane"), "{html}");
    let order: Vec<usize> = [
        "Have offline access",
        "View basic profile information",
        "View your email address",
        "View your groups",
    ]
    .iter()
    .map(|d| {
        html.find(d)
            .unwrap_or_else(|| panic!("missing {d}: {html}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "sorted: {html}");
    assert!(!html.contains("openid"), "{html}");
    assert!(
        html.contains(r#"name="approval" value="approve""#),
        "{html}"
    );
    assert!(
        html.contains(r#"name="approval" value="rejected""#),
        "{html}"
    );
    assert_eq!(
        html.matches(r#"<input type="hidden" name="csrf_token" value="tok-456">"#)
            .count(),
        2,
        "{html}"
    );
}

#[test]
fn scope_descriptions_follow_dex() {
    assert_eq!(
        scope_descriptions(&["openid", "groups", "email", "federated:id", "email"]),
        vec!["View your email address", "View your groups"]
    );
    assert!(scope_descriptions(&["audience:server:client_id:x"]).is_empty());
}

#[test]
fn error_and_oob_pages() {
    let t = builtin();
    let html = t.error(&ErrorPage {
        status: 400,
        message: "Unregistered redirect_uri.".into(),
    });
    assert!(html.contains("<h1>Bad Request</h1>"), "{html}");
    assert!(html.contains("Unregistered redirect_uri."), "{html}");
    let html = t.error(&ErrorPage {
        status: 799,
        message: "odd".into(),
    });
    assert!(html.contains("<h1>Error</h1>"), "{html}");
    let html = t.oob(&OobPage {
        code: "abc123def".into(),
    });
    assert!(html.contains(r#"value="abc123def""#), "{html}");
    assert!(html.contains("Login successful"), "{html}");
}

#[test]
fn device_pages_have_the_form_csrf_prefill_and_error() {
    let t = builtin();
    let page = DevicePage {
        post_url: "/dex/device/auth/verify_code".into(),
        user_code: "BCDF-GHJK".into(),
        invalid: false,
        csrf_token: "tok-789".into(),
    };
    let html = t.device(&page);
    assert!(html.contains(r#"method="post""#), "{html}");
    assert!(
        html.contains("device&#x2f;auth&#x2f;verify_code")
            || html.contains("device/auth/verify_code"),
        "{html}"
    );
    assert!(html.contains(r#"name="user_code""#), "{html}");
    assert!(html.contains(r#"value="BCDF-GHJK""#), "{html}");
    assert!(
        html.contains(r#"name="csrf_token" value="tok-789""#),
        "{html}"
    );
    assert!(!html.contains("Invalid or expired code"), "{html}");
    let html = t.device(&DevicePage {
        invalid: true,
        user_code: "<b>x</b>".into(),
        ..page
    });
    assert!(html.contains("Invalid or expired code"), "{html}");
    assert!(!html.contains("<b>x</b>"), "escaped: {html}");
    let html = t.device_success(&DeviceSuccessPage {
        client_name: "Kube CLI".into(),
    });
    assert!(html.contains("Kube CLI"), "{html}");
    assert!(html.contains("Device connected"), "{html}");
}

#[test]
fn user_controlled_strings_are_escaped() {
    let t = builtin();
    let evil = r#"<script>alert("x")</script>"#;
    let html = t.approval(&ApprovalPage {
        client_name: evil.into(),
        username: evil.into(),
        ..approval_page()
    });
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");

    let html = t.password(&PasswordPage {
        username: r#""><script>x</script>"#.into(),
        invalid: true,
        ..password_page()
    });
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains(r#"value="&quot;&gt;&lt;script&gt;"#),
        "attribute not broken out of: {html}"
    );

    let html = t.error(&ErrorPage {
        status: 500,
        message: evil.into(),
    });
    assert!(!html.contains("<script>"), "{html}");

    let html = t.login(&LoginPage {
        connectors: vec![ConnectorLink {
            id: "x".into(),
            name: evil.into(),
            kind: "x".into(),
            url: r#"/auth/x?a="><script>"#.into(),
        }],
    });
    assert!(!html.contains("<script>"), "{html}");
}

#[test]
fn theme_logo_and_issuer_defaults() {
    let html = Templates::load(&FrontendSettings {
        theme: "dark".into(),
        issuer_display_name: String::new(),
        logo_url: "theme/logo.png".into(),
        ..frontend()
    })
    .unwrap()
    .error(&ErrorPage {
        status: 404,
        message: "m".into(),
    });
    assert!(html.contains(r#"class="theme-dark""#), "{html}");
    assert!(html.contains("oxidex"), "{html}");
    assert!(
        !html.contains("<img"),
        "Dex's default logo path is not ours: {html}"
    );

    let html = Templates::load(&FrontendSettings {
        theme: "coreos".into(),
        logo_url: "https://example.com/logo.svg".into(),
        ..frontend()
    })
    .unwrap()
    .oob(&OobPage { code: "c".into() });
    assert!(html.contains(r#"class="theme-light""#), "{html}");
    assert!(html.contains("<img"), "{html}");
    assert!(html.contains("example.com"), "{html}");
}

#[test]
fn override_from_frontend_dir_replaces_only_that_template() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "templates/error.html",
        "<p>custom {{ status_text }}: {{ message }} for {{ issuer }} {{ extra.support }}</p>",
    );
    write(
        dir.path(),
        "themes/light/styles.css",
        "body { --custom: 1; }",
    );
    let mut settings = frontend();
    settings.dir = Some(dir.path().to_path_buf());
    settings
        .extra
        .insert("support".into(), "mail ops@example.com".into());
    let t = Templates::load(&settings).unwrap();
    let html = t.error(&ErrorPage {
        status: 403,
        message: "<b>no</b>".into(),
    });
    assert_eq!(
        html,
        "<p>custom Forbidden: &lt;b&gt;no&lt;&#x2f;b&gt; for Example SSO mail ops@example.com</p>"
    );
    // Not overridden: built-in, with the theme's extra CSS appended.
    let html = t.oob(&OobPage { code: "c".into() });
    assert!(html.contains("Login successful"), "{html}");
    assert!(html.contains("--custom: 1;"), "{html}");
}

#[test]
fn overridden_base_layout_is_used_by_built_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "templates/base.html",
        "<html><body data-x=\"mine\">{% block content %}{% endblock %}</body></html>",
    );
    let mut settings = frontend();
    settings.dir = Some(dir.path().to_path_buf());
    let html = Templates::load(&settings)
        .unwrap()
        .password(&password_page());
    assert!(html.contains(r#"data-x="mine""#), "{html}");
    assert!(html.contains(r#"name="csrf_token""#), "{html}");
}

#[test]
fn broken_override_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A Dex (Go template) file: not Jinja.
    write(
        dir.path(),
        "templates/approval.html",
        "{{ template \"header.html\" . }}<p>{{ .ClientName }}</p>",
    );
    let mut settings = frontend();
    settings.dir = Some(dir.path().to_path_buf());
    let err = Templates::load(&settings).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WebError::Template { .. }), "{msg}");
    assert!(msg.contains("templates/approval.html"), "{msg}");
    assert!(msg.contains("Jinja"), "{msg}");
}

#[test]
fn override_that_parses_but_cannot_render_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "templates/login.html",
        "{% extends \"header.html\" %}",
    );
    let mut settings = frontend();
    settings.dir = Some(dir.path().to_path_buf());
    let msg = Templates::load(&settings).unwrap_err().to_string();
    assert!(msg.contains("templates/login.html"), "{msg}");
    assert!(msg.contains("header.html"), "{msg}");
}

#[test]
fn missing_frontend_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = frontend();
    settings.dir = Some(dir.path().join("nope"));
    let msg = Templates::load(&settings).unwrap_err().to_string();
    assert!(
        msg.contains("frontend.dir") && msg.contains("nope"),
        "{msg}"
    );
}

#[test]
fn empty_frontend_dir_uses_built_ins() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = frontend();
    settings.dir = Some(dir.path().to_path_buf());
    let html = Templates::load(&settings)
        .unwrap()
        .approval(&approval_page());
    assert!(html.contains("Grant access"), "{html}");
}

#[test]
fn override_failing_at_render_time_falls_back_to_built_in() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "templates/error.html",
        "{% if message == \"boom\" %}{{ 1 // 0 }}{% endif %}custom {{ message }}",
    );
    let mut settings = frontend();
    settings.dir = Some(dir.path().to_path_buf());
    let t = Templates::load(&settings).unwrap();
    let page = |message: &str| ErrorPage {
        status: 500,
        message: message.into(),
    };
    assert_eq!(t.error(&page("fine")), "custom fine");
    let html = t.error(&page("boom"));
    assert!(html.contains("<h1>Internal Server Error</h1>"), "{html}");
    assert!(html.contains("boom"), "{html}");
}
