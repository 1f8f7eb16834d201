//! A small keep-alive HTTP/1.1 client (one hyper connection per worker), a cookie jar,
//! and just enough HTML reading to submit a login or approval form.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, HeaderValue, LOCATION, SET_COOKIE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// "STATUS: first 200 bytes of the body", for error messages.
    pub fn describe(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(200).collect();
        format!("{} {}", self.status, cut.trim())
    }
}

/// One keep-alive connection, re-opened when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Sent as `X-Forwarded-For`: the simulated client of the current login, so a
    /// server that trusts the bench as its proxy rate-limits each login apart.
    pub forwarded_for: Option<HeaderValue>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or(HeaderValue::from_static("localhost"));
        Self {
            addr,
            host,
            sender: None,
            forwarded_for: None,
        }
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Error> {
        let usable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| "no connection".into())
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        cookies: Option<&str>,
        basic: Option<&str>,
        form: Option<String>,
    ) -> Result<Reply, Error> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(client) = &self.forwarded_for {
            builder = builder.header("x-forwarded-for", client.clone());
        }
        if let Some(cookies) = cookies.filter(|c| !c.is_empty()) {
            builder = builder.header(COOKIE, cookies);
        }
        if let Some(basic) = basic {
            builder = builder.header(AUTHORIZATION, basic);
        }
        let body = match form {
            Some(form) => {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body)?;
        let sender = self.ready().await?;
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
            .await
            .map_err(|_| format!("no response to {path} in 30 s"))??;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, Error> {
        self.send(Method::GET, path, None, None, None).await
    }
}

/// Cookies of one browser session; paths and expiry are ignored (one flow, one jar).
#[derive(Default)]
pub struct Jar(Vec<(String, String)>);

impl Jar {
    pub fn store(&mut self, headers: &HeaderMap) {
        for line in headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let pair = line.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
                match self.0.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => self.0.push((name, value)),
                }
            }
        }
    }

    pub fn header(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        parts.join("; ")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn dec(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn form_body(fields: &[(String, String)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    parts.join("&")
}

/// The value of `name` in a URL's query string.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| dec(k) == name)
        .map(|(_, v)| dec(v))
}

/// Turns a Location or form action into a path on the server at `addr`:
/// `http://127.0.0.1:port/x` and `/x` are accepted; `x` is relative to `current`.
pub fn local_path(target: &str, addr: SocketAddr, current: &str) -> Result<String, Error> {
    let target = decode_entities(target);
    if let Some(rest) = target.strip_prefix("http://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority != addr.to_string() && authority != format!("localhost:{}", addr.port()) {
            return Err(format!("redirect to another server: {target}").into());
        }
        return Ok(if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        });
    }
    if target.starts_with('/') {
        return Ok(target);
    }
    let base = current.split('?').next().unwrap_or(current);
    let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
    if target.is_empty() {
        return Ok(current.to_owned());
    }
    Ok(format!("{dir}{target}"))
}

/// The entities a template engine writes into attributes: `&amp;` `&quot;` `&lt;` `&gt;`
/// `&apos;` and numeric ones in any case (`&#x2F;`, `&#x2f;`, `&#47;`).
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                _ => {
                    let number = name.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The first `<form>` of a page: its action and the fields a user would submit.
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

/// Reads the first form and fills it in: hidden inputs as they are, `login` and
/// `password` with the given credentials, and `approval=approve` when the page asks.
pub fn fill_first_form(html: &str, login: &str, password: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let form = &html[start..];
    let form = &form[..form.find("</form>").unwrap_or(form.len())];
    let tag_end = form.find('>')?;
    let action = attribute(&form[..tag_end], "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find("<input") {
        let tag = &rest[at..];
        let end = tag.find('>').unwrap_or(tag.len());
        let attrs = &tag[..end];
        if let Some(name) = attribute(attrs, "name") {
            let kind = attribute(attrs, "type")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let value = match name.as_str() {
                "login" | "username" => login.to_owned(),
                "password" => password.to_owned(),
                _ => attribute(attrs, "value")
                    .map(|v| decode_entities(&v))
                    .unwrap_or_default(),
            };
            if kind != "submit" && kind != "checkbox" {
                fields.push((name, value));
            }
        }
        rest = &tag[end..];
    }
    if form.contains("name=\"approval\"") && !fields.iter().any(|(k, _)| k == "approval") {
        fields.push(("approval".to_owned(), "approve".to_owned()));
    }
    Some(Form { action, fields })
}

/// The value of attribute `name` in a tag's text (`<input type="x" name="y" ...`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let bytes = tag.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Skip to the start of an attribute name.
        while i < bytes.len()
            && !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'-' || bytes[i] == b'_')
        {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-' || bytes[i] == b'_')
        {
            i += 1;
        }
        let key = &tag[key_start..i];
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            let (value, next) = match bytes.get(i) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    let close = tag[i + 1..]
                        .find(q as char)
                        .map_or(bytes.len(), |p| i + 1 + p);
                    (&tag[i + 1..close], close + 1)
                }
                _ => {
                    let close = tag[i..]
                        .find(|c: char| c.is_whitespace() || c == '>')
                        .map_or(bytes.len(), |p| i + p);
                    (&tag[i..close], close)
                }
            };
            if key.eq_ignore_ascii_case(name) {
                return Some(value.to_owned());
            }
            i = next;
        } else if key.is_empty() {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_a_login_form_and_keeps_hidden_fields() {
        let html = r#"<html><form method="post" action="/dex/auth/local/login?back=&amp;state=x">
            <input type="hidden" name="csrf_token" value="abc&amp;d"/>
            <input required type="text" name="login" placeholder="email">
            <input type='password' name='password'>
            <button type="submit">Login</button></form><form action="/other"></form>"#;
        let form = fill_first_form(html, "a@b", "pw").unwrap();
        assert_eq!(form.action, "/dex/auth/local/login?back=&amp;state=x");
        assert_eq!(
            form.fields,
            vec![
                ("csrf_token".to_owned(), "abc&d".to_owned()),
                ("login".to_owned(), "a@b".to_owned()),
                ("password".to_owned(), "pw".to_owned()),
            ]
        );
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            local_path(&form.action, addr, "/x").unwrap(),
            "/dex/auth/local/login?back=&state=x"
        );
    }

    #[test]
    fn entities_decode_in_either_case() {
        assert_eq!(
            decode_entities("&#x2f;dex&#x2F;auth&#47;local?back=&amp;state=x&#39;&quot;&lt;&gt;"),
            "/dex/auth/local?back=&state=x'\"<>"
        );
        assert_eq!(
            decode_entities("a & b &unknown; &#xZZ; &"),
            "a & b &unknown; &#xZZ; &"
        );
    }

    #[test]
    fn approval_pages_are_approved() {
        let html = r#"<form method="post"><input type="hidden" name="req" value="r1"><button type="submit" name="approval" value="approve">Grant</button></form>"#;
        let form = fill_first_form(html, "", "").unwrap();
        assert_eq!(
            form.fields,
            vec![
                ("req".into(), "r1".into()),
                ("approval".into(), "approve".into())
            ]
        );
    }

    #[test]
    fn locations_resolve_on_the_same_server_only() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            local_path("http://127.0.0.1:8080/dex/callback?s=1", addr, "/").unwrap(),
            "/dex/callback?s=1"
        );
        assert_eq!(
            local_path("login", addr, "/dex/auth/x?y=1").unwrap(),
            "/dex/auth/login"
        );
        assert!(local_path("http://127.0.0.1:9/x", addr, "/").is_err());
    }

    #[test]
    fn query_params_and_cookies() {
        assert_eq!(
            query_param("http://h/cb?code=a%2Bb&state=s", "code").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_param("http://h/cb?state=s", "code"), None);
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("a=1; path=/x; httponly"),
        );
        headers.append(SET_COOKIE, HeaderValue::from_static("b=2"));
        let mut jar = Jar::default();
        jar.store(&headers);
        let mut again = HeaderMap::new();
        again.append(SET_COOKIE, HeaderValue::from_static("a=3"));
        jar.store(&again);
        assert_eq!(jar.header(), "a=3; b=2");
        assert_eq!(enc("a b/+"), "a%20b%2F%2B");
        assert_eq!(dec("a%20b%2F%2B"), "a b/+");
    }
}
