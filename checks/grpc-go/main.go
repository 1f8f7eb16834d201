// Dex's own Go API client (github.com/dexidp/dex/api/v2) against a running
// oxidex: creates a client and a password-database user through the gRPC API,
// lists and verifies them, logs in with them through the browser flow (a
// plain HTTP client with a cookie jar: /auth -> password form -> approval ->
// code -> /token), refreshes, lists the user's refresh tokens, revokes them
// and deletes what it created.
//
//	grpc-go -grpc 127.0.0.1:5557 -issuer http://127.0.0.1:5556/dex
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	api "github.com/dexidp/dex/api/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	clientID     = "grpc-go-app"
	clientSecret = "grpc-go-secret"
	redirectURI  = "http://127.0.0.1:5555/grpc-go/callback"
	email        = "Grpc.User@example.com"
	userID       = "grpc-go-user"
	password     = "password"
	// bcrypt (cost 10) of "password".
	passwordHash = "$2b$10$sD0K5NZrR9THssaos8nEde5ywauRcVXC6frrFKxi6lUuERHKIbAdi"
)

var (
	formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	hidden     = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "grpc-go: FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func step(format string, args ...any) {
	fmt.Printf("grpc-go: "+format+"\n", args...)
}

func main() {
	grpcAddr := flag.String("grpc", "", "oxidex's gRPC API address (host:port)")
	issuer := flag.String("issuer", "", "oxidex's issuer URL")
	flag.Parse()
	if *grpcAddr == "" || *issuer == "" {
		fail("usage: grpc-go -grpc HOST:PORT -issuer URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	conn, err := grpc.NewClient(*grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err, "dial")
	defer conn.Close()
	dex := api.NewDexClient(conn)

	version, err := dex.GetVersion(ctx, &api.VersionReq{})
	check(err, "GetVersion")
	if version.Api != 3 || version.Server == "" {
		fail("GetVersion: %+v", version)
	}
	step("GetVersion: server %s, api %d", version.Server, version.Api)

	discovery, err := dex.GetDiscovery(ctx, &api.DiscoveryReq{})
	check(err, "GetDiscovery")
	if discovery.Issuer != *issuer {
		fail("GetDiscovery issuer %q, want %q", discovery.Issuer, *issuer)
	}

	created, err := dex.CreateClient(ctx, &api.CreateClientReq{Client: &api.Client{
		Id: clientID, Secret: clientSecret, RedirectUris: []string{redirectURI}, Name: "gRPC Go App",
	}})
	check(err, "CreateClient")
	if created.AlreadyExists || created.Client.GetId() != clientID {
		fail("CreateClient: %+v", created)
	}
	again, err := dex.CreateClient(ctx, &api.CreateClientReq{Client: &api.Client{Id: clientID}})
	check(err, "CreateClient again")
	if !again.AlreadyExists {
		fail("second CreateClient did not report already_exists")
	}
	got, err := dex.GetClient(ctx, &api.GetClientReq{Id: clientID})
	check(err, "GetClient")
	if got.Client.GetSecret() != clientSecret {
		fail("GetClient secret mismatch")
	}
	step("CreateClient/GetClient: %s", clientID)

	pw, err := dex.CreatePassword(ctx, &api.CreatePasswordReq{Password: &api.Password{
		Email: email, Hash: []byte(passwordHash), Username: "grpc-user", UserId: userID,
	}})
	check(err, "CreatePassword")
	if pw.AlreadyExists {
		fail("CreatePassword: already exists")
	}
	if _, err := dex.CreatePassword(ctx, &api.CreatePasswordReq{Password: &api.Password{
		Email: "weak@example.com", Hash: []byte("$2a$04$abcdefghijklmnopqrstuv0123456789012345678901234567890"), UserId: "w",
	}}); err == nil || !strings.Contains(err.Error(), "does not meet minimum cost requirement = 10") {
		fail("a cost-4 hash was not refused as Dex does: %v", err)
	}

	clients, err := dex.ListClients(ctx, &api.ListClientReq{})
	check(err, "ListClients")
	if !hasClient(clients.Clients, clientID) {
		fail("ListClients lacks %s", clientID)
	}
	passwords, err := dex.ListPasswords(ctx, &api.ListPasswordReq{})
	check(err, "ListPasswords")
	found := false
	for _, p := range passwords.Passwords {
		if p.Email == strings.ToLower(email) && p.UserId == userID {
			found = true
		}
		if len(p.Hash) != 0 {
			fail("ListPasswords returned a hash for %s", p.Email)
		}
	}
	if !found {
		fail("ListPasswords lacks %s", email)
	}
	verified, err := dex.VerifyPassword(ctx, &api.VerifyPasswordReq{Email: email, Password: password})
	check(err, "VerifyPassword")
	if !verified.Verified {
		fail("VerifyPassword: %+v", verified)
	}
	wrong, err := dex.VerifyPassword(ctx, &api.VerifyPasswordReq{Email: email, Password: "wrong"})
	check(err, "VerifyPassword (wrong)")
	if wrong.Verified || wrong.NotFound {
		fail("VerifyPassword with a wrong password: %+v", wrong)
	}
	step("CreatePassword/ListClients/ListPasswords/VerifyPassword: ok")

	tokens := login(*issuer)
	sub := subject(tokens["id_token"].(string))
	refreshed := tokenCall(*issuer, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {tokens["refresh_token"].(string)},
	}, 200)
	step("logged in as %s through the browser flow, refreshed", sub)

	refreshes, err := dex.ListRefresh(ctx, &api.ListRefreshReq{UserId: sub})
	check(err, "ListRefresh")
	if len(refreshes.RefreshTokens) != 1 || refreshes.RefreshTokens[0].ClientId != clientID {
		fail("ListRefresh: %+v", refreshes.RefreshTokens)
	}
	revoked, err := dex.RevokeRefresh(ctx, &api.RevokeRefreshReq{UserId: sub, ClientId: clientID})
	check(err, "RevokeRefresh")
	if revoked.NotFound {
		fail("RevokeRefresh: not found")
	}
	tokenCall(*issuer, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refreshed["refresh_token"].(string)},
	}, 400)
	again2, err := dex.RevokeRefresh(ctx, &api.RevokeRefreshReq{UserId: sub, ClientId: clientID})
	check(err, "RevokeRefresh again")
	if !again2.NotFound {
		fail("second RevokeRefresh did not report not_found")
	}
	step("ListRefresh/RevokeRefresh: revoked token refused at /token")

	delPw, err := dex.DeletePassword(ctx, &api.DeletePasswordReq{Email: email})
	check(err, "DeletePassword")
	delClient, err := dex.DeleteClient(ctx, &api.DeleteClientReq{Id: clientID})
	check(err, "DeleteClient")
	if delPw.NotFound || delClient.NotFound {
		fail("delete: password not found %v, client not found %v", delPw.NotFound, delClient.NotFound)
	}
	if _, err := dex.GetClient(ctx, &api.GetClientReq{Id: clientID}); err == nil {
		fail("GetClient after DeleteClient succeeded")
	}
	step("DeletePassword/DeleteClient: ok")
	fmt.Println("grpc-go: 1 passed, 0 failed")
}

func hasClient(clients []*api.ClientInfo, id string) bool {
	for _, c := range clients {
		if c.Id == id {
			return true
		}
	}
	return false
}

// login walks the browser flow with a cookie jar and exchanges the code.
func login(issuer string) map[string]any {
	jar, err := cookiejar.New(nil)
	check(err, "cookie jar")
	browser := &http.Client{
		Jar:     jar,
		Timeout: 20 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), redirectURI) {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	auth := issuer + "/auth?" + url.Values{
		"client_id": {clientID}, "redirect_uri": {redirectURI}, "response_type": {"code"},
		"scope": {"openid email offline_access"}, "state": {"grpc-go-state"}, "connector_id": {"local"},
	}.Encode()
	resp, body := get(browser, auth)
	fields := form(resp, body, "password form")
	fields.values.Set("login", strings.ToLower(email))
	fields.values.Set("password", password)
	resp, body = post(browser, fields.action, fields.values)
	if resp.StatusCode != 200 || !strings.Contains(body, "gRPC Go App") {
		fail("approval page expected after the password form, got %d:\n%s", resp.StatusCode, body)
	}
	approval := form(resp, body, "approval form")
	approval.values.Set("approval", "approve")
	resp, _ = post(browser, approval.action, approval.values)
	location := resp.Header.Get("Location")
	back, err := url.Parse(location)
	if err != nil || !strings.HasPrefix(location, redirectURI) {
		fail("expected a redirect to %s, got %d %q", redirectURI, resp.StatusCode, location)
	}
	if back.Query().Get("state") != "grpc-go-state" {
		fail("state not returned: %s", location)
	}
	return tokenCall(issuer, url.Values{
		"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")}, "redirect_uri": {redirectURI},
	}, 200)
}

type htmlForm struct {
	action string
	values url.Values
}

// form finds the first POST form of a page and its hidden fields.
func form(resp *http.Response, body, what string) htmlForm {
	m := formAction.FindStringSubmatch(body)
	if m == nil {
		fail("%s expected at %s (%d):\n%s", what, resp.Request.URL, resp.StatusCode, body)
	}
	action, err := resp.Request.URL.Parse(html.UnescapeString(m[1]))
	check(err, "form action")
	start := strings.Index(body, m[0])
	end := strings.Index(body[start:], "</form>")
	values := url.Values{}
	for _, field := range hidden.FindAllStringSubmatch(body[start:start+end], -1) {
		values.Set(html.UnescapeString(field[1]), html.UnescapeString(field[2]))
	}
	return htmlForm{action: action.String(), values: values}
}

func get(c *http.Client, u string) (*http.Response, string) {
	resp, err := c.Get(u)
	check(err, "GET "+u)
	return resp, readBody(resp)
}

func post(c *http.Client, u string, values url.Values) (*http.Response, string) {
	resp, err := c.PostForm(u, values)
	check(err, "POST "+u)
	return resp, readBody(resp)
}

func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	check(err, "read body")
	return string(body)
}

func tokenCall(issuer string, values url.Values, want int) map[string]any {
	req, err := http.NewRequest("POST", issuer+"/token", strings.NewReader(values.Encode()))
	check(err, "token request")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	check(err, "POST /token")
	body := readBody(resp)
	if resp.StatusCode != want {
		fail("/token %s: status %d, want %d: %s", values.Get("grant_type"), resp.StatusCode, want, body)
	}
	out := map[string]any{}
	check(json.Unmarshal([]byte(body), &out), "token response")
	return out
}

// subject reads the `sub` claim of an ID token (the token endpoint just issued it).
func subject(idToken string) string {
	parts := strings.Split(idToken, ".")
	if len(parts) != 3 {
		fail("not a JWT: %q", idToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	check(err, "ID token payload")
	claims := map[string]any{}
	check(json.Unmarshal(payload, &claims), "ID token claims")
	sub, _ := claims["sub"].(string)
	if sub == "" {
		fail("ID token without sub")
	}
	return sub
}
