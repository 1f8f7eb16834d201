//! A minimal browser for the login pages: follows redirects by hand (so tests can
//! stop at the client's redirect URI), keeps cookies (every login is bound to the
//! browser that started it) and reads forms out of the HTML.

use reqwest::{Response, StatusCode};

pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Self {
            http,
            base: base.to_owned(),
        }
    }

    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{}", self.base, location)
        }
    }

    #[allow(dead_code)]
    pub async fn get(&self, url: &str) -> Response {
        self.http.get(self.absolute(url)).send().await.unwrap()
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.absolute(url))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Follows redirects while they stay on oxidex; returns the last response and
    /// the URL it came from, or the first `Location` that leaves oxidex.
    pub async fn follow(&self, url: &str) -> Followed {
        let mut url = self.absolute(url);
        for _ in 0..10 {
            let response = self.http.get(&url).send().await.unwrap();
            if !response.status().is_redirection() {
                let status = response.status();
                let body = response.text().await.unwrap();
                return Followed::Page { url, status, body };
            }
            let location = location(&response);
            let next = self.absolute(&location);
            if !next.starts_with(&self.base) {
                return Followed::Left(next);
            }
            url = next;
        }
        panic!("too many redirects");
    }
}

pub enum Followed {
    Page {
        url: String,
        status: StatusCode,
        body: String,
    },
    Left(String),
}

impl Followed {
    pub fn page(self) -> (String, StatusCode, String) {
        match self {
            Followed::Page { url, status, body } => (url, status, body),
            Followed::Left(url) => panic!("expected a page, left to {url}"),
        }
    }
    #[allow(dead_code)]
    pub fn left(self) -> String {
        match self {
            Followed::Left(url) => url,
            Followed::Page { url, status, body } => {
                panic!("expected a redirect away, got {status} at {url}:\n{body}")
            }
        }
    }
}

pub fn location(response: &Response) -> String {
    response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn unescape(value: &str) -> String {
    value
        .replace("&amp;", "&")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The `action` of the first form on the page.
pub fn form_action(html: &str) -> String {
    attribute_after(html, "<form", "action").unwrap_or_else(|| panic!("no form in:\n{html}"))
}

/// The value of the (first) input named `name`.
pub fn input_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} in:\n{html}"));
    let rest = &html[start..];
    let value = rest.find("value=\"").unwrap() + "value=\"".len();
    let end = rest[value..].find('"').unwrap();
    unescape(&rest[value..value + end])
}

fn attribute_after(html: &str, tag: &str, attribute: &str) -> Option<String> {
    let start = html.find(tag)?;
    let rest = &html[start..];
    let marker = format!("{attribute}=\"");
    let value = rest.find(&marker)? + marker.len();
    let end = rest[value..].find('"')?;
    Some(unescape(&rest[value..value + end]))
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).unwrap();
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
