# VM test of the reference deployment: browser -> Grafana -> oxidex -> Forgejo.
#   forgejo  services.forgejo (SQLite); user, org, team and the OAuth2 app are made through the API
#   idp      services.oxidex with the gitea connector; the app's id and secret arrive as
#            credential files, then oxidex restarts
#   grafana  services.grafana with generic_oauth, client secret from a file, role from groups
#   client   runs checks/login-driver/login_driver.py
# Called from the flake: pkgs.testers.runNixOSTest (import ./checks/forgejo-grafana.nix { … }).
{
  pkgs,
  oxidexModule,
  ...
}:
let
  inherit (pkgs) lib;

  forgejoUrl = "http://forgejo:3000";
  issuer = "http://idp:5556/dex";
  grafanaUrl = "http://grafana:3000";
  grafanaCallback = "${grafanaUrl}/login/generic_oauth";
  # Where oxidex sends the browser after a sign-out from Grafana.
  grafanaSignedOut = "${grafanaUrl}/login";

  # Test-only secrets. They go through the store here; real deployments keep them out of it.
  grafanaClientSecret = "grafana-client-secret-for-tests";
  adminPassword = "admin-password-for-tests";
  alicePassword = "alice-password-for-tests";

  # Where the test script drops what Forgejo hands out at run time.
  upstreamDir = "/run/oxidex-upstream";

  loginDriver = pkgs.writers.writePython3Bin "oxidex-login-driver" {
    flakeIgnore = [ "E501" ];
  } (builtins.readFile ./login-driver/login_driver.py);
in
{
  name = "oxidex-forgejo-grafana";

  defaults = {
    imports = [ oxidexModule ];
  };

  nodes = {
    forgejo =
      { config, ... }:
      {
        virtualisation.memorySize = 2047;
        services.forgejo = {
          enable = true;
          database.type = "sqlite3";
          settings = {
            server = {
              DOMAIN = "forgejo";
              HTTP_PORT = 3000;
              ROOT_URL = "${forgejoUrl}/";
            };
            service.DISABLE_REGISTRATION = true;
          };
        };
        networking.firewall.allowedTCPPorts = [ 3000 ];
        environment.systemPackages = [
          config.services.forgejo.package
          pkgs.jq
        ];
      };

    idp = {
      services.oxidex = {
        enable = true;
        openFirewall = true;
        settings = {
          inherit issuer;
          web.http = "0.0.0.0:5556";
          telemetry.http = "127.0.0.1:5558";
          oauth2.skipApprovalScreen = true;
          staticClients = [
            {
              id = "grafana";
              name = "Grafana";
              redirectURIs = [
                grafanaCallback
                "http://grafana.test:3000/login/generic_oauth"
              ];
              postLogoutRedirectURIs = [ grafanaSignedOut ];
              secretFile = "/run/credentials/oxidex.service/grafana-client-secret";
            }
          ];
          connectors = [
            {
              type = "gitea";
              id = "forgejo";
              name = "Forgejo";
              config = {
                baseURL = forgejoUrl;
                clientIDFile = "/run/credentials/oxidex.service/forgejo-client-id";
                clientSecretFile = "/run/credentials/oxidex.service/forgejo-client-secret";
                redirectURI = "${issuer}/callback";
                loadAllGroups = true;
              };
            }
          ];
        };
        credentials = {
          grafana-client-secret = "/etc/oxidex/grafana-client-secret";
          forgejo-client-id = "${upstreamDir}/client-id";
          forgejo-client-secret = "${upstreamDir}/client-secret";
        };
      };
      environment.etc."oxidex/grafana-client-secret" = {
        mode = "0400";
        text = grafanaClientSecret;
      };
      # Placeholders so oxidex can start before Forgejo's app exists; the script replaces them.
      systemd.tmpfiles.rules = [
        "d ${upstreamDir} 0700 root root - -"
        "f ${upstreamDir}/client-id 0400 root root - placeholder"
        "f ${upstreamDir}/client-secret 0400 root root - placeholder"
      ];
    };

    grafana = {
      virtualisation.memorySize = 1536;
      services.grafana = {
        enable = true;
        settings = {
          server = {
            http_addr = "0.0.0.0";
            http_port = 3000;
            domain = "grafana";
            root_url = "${grafanaUrl}/";
          };
          security.secret_key = "$__file{/etc/grafana-secret-key}";
          "auth.generic_oauth" = {
            enabled = true;
            name = "oxidex";
            allow_sign_up = true;
            client_id = "grafana";
            client_secret = "$__file{/etc/grafana-oidc-client-secret}";
            scopes = "openid email profile groups offline_access";
            auth_url = "${issuer}/auth";
            token_url = "${issuer}/token";
            api_url = "${issuer}/userinfo";
            use_pkce = true;
            use_refresh_token = true;
            # Grafana's /logout sends the browser here and, since the URL carries
            # post_logout_redirect_uri, adds id_token_hint (RP-Initiated Logout 1.0).
            signout_redirect_url = "${issuer}/logout?post_logout_redirect_uri=${grafanaSignedOut}";
            login_attribute_path = "preferred_username";
            role_attribute_path = "contains(groups[*], 'sso:admins') && 'Admin' || contains(groups[*], 'sso') && 'Viewer' || 'None'";
          };
        };
      };
      environment.etc."grafana-oidc-client-secret" = {
        mode = "0400";
        user = "grafana";
        text = grafanaClientSecret;
      };
      environment.etc."grafana-secret-key" = {
        mode = "0400";
        user = "grafana";
        text = "grafana-secret-key-for-tests";
      };
      networking.firewall.allowedTCPPorts = [ 3000 ];
    };

    client = {
      environment.systemPackages = [ loginDriver ];
    };
  };

  testScript =
    { nodes, ... }:
    let
      driverOidc = lib.concatStringsSep " " [
        "oxidex-login-driver oidc"
        "--issuer ${issuer}"
        "--client-id grafana"
        "--client-secret ${grafanaClientSecret}"
        "--redirect-uri ${grafanaCallback}"
        "--username alice --password ${alicePassword}"
        "--role-map 'sso:admins=Admin,sso=Viewer'"
      ];
    in
    ''
      import json
      import shlex


      def api(method, path, body=None, auth="forgeadmin:${adminPassword}"):
          cmd = f"curl -sS --fail-with-body -u {auth} -X {method} -H 'Content-Type: application/json' http://localhost:3000/api/v1{path}"
          if body is not None:
              cmd += " -d " + shlex.quote(json.dumps(body))
          out = forgejo.succeed(cmd)
          return json.loads(out) if out.strip() else None


      start_all()

      with subtest("Forgejo: admin, user alice, org sso with team admins, OAuth2 app for oxidex"):
          forgejo.wait_for_unit("forgejo.service")
          forgejo.wait_for_open_port(3000)
          forgejo.succeed(
              # as the service user, which the CLI insists on; the package is on its PATH
              "su -l forgejo -c 'FORGEJO_WORK_DIR=/var/lib/forgejo FORGEJO_CUSTOM=/var/lib/forgejo/custom forgejo "
              + "admin user create --admin --username forgeadmin --password ${adminPassword} "
              + "--email forgeadmin@example.test --must-change-password=false'"
          )
          api("POST", "/admin/users", {
              "username": "alice",
              "email": "alice@example.test",
              "password": "${alicePassword}",
              "full_name": "Alice Example",
              "must_change_password": False,
          })
          api("POST", "/orgs", {"username": "sso", "visibility": "public"})
          team = api("POST", "/orgs/sso/teams", {"name": "admins", "permission": "read", "units": ["repo.code"]})
          api("PUT", f"/teams/{team['id']}/members/alice")
          app = api("POST", "/user/applications/oauth2", {
              "name": "oxidex",
              "redirect_uris": ["${issuer}/callback"],
              "confidential_client": True,
          })
          assert app["client_secret"], "Forgejo returned no client secret"

      with subtest("oxidex: receive the app's id and secret as credentials, restart"):
          idp.wait_for_unit("oxidex.service")
          idp.succeed(f"printf %s {shlex.quote(app['client_id'])} > ${upstreamDir}/client-id")
          idp.succeed(f"printf %s {shlex.quote(app['client_secret'])} > ${upstreamDir}/client-secret")
          idp.succeed("systemctl restart oxidex.service")
          idp.wait_for_unit("oxidex.service")
          idp.wait_for_open_port(5556)
          idp.succeed("curl -sf http://127.0.0.1:5558/healthz/ready")
          # The secret never reaches the store or the journal. Read both and look in Python:
          # `fail("journalctl … | grep -q SECRET")` would pass on a leak, since the driver's
          # pipefail turns grep's early exit into 141 (SIGPIPE) exactly when it matches.
          stored = idp.succeed("cat ${nodes.idp.services.oxidex.configFile}")
          assert '"issuer"' in stored, stored
          assert app["client_secret"] not in stored, "the upstream client secret is in the store"
          journal = idp.succeed("journalctl --unit oxidex.service --no-pager --output cat")
          assert journal.strip(), "oxidex's journal is empty"
          assert app["client_secret"] not in journal, "the upstream client secret is in the journal"

      with subtest("Grafana is up and reaches oxidex"):
          grafana.wait_for_unit("grafana.service")
          grafana.wait_for_open_port(3000)
          client.wait_until_succeeds("curl -sf ${issuer}/.well-known/openid-configuration")
          client.wait_until_succeeds("curl -sf ${grafanaUrl}/api/health")

      with subtest("Login to Grafana through oxidex and Forgejo (consent on first use)"):
          out = client.succeed(
              "oxidex-login-driver grafana --grafana-url ${grafanaUrl} "
              + "--username alice --password ${alicePassword} "
              + "--expect-login alice --expect-email alice@example.test --expect-role Admin"
          )
          user = json.loads(out)
          assert user["login"] == "alice", user
          assert user["email"] == "alice@example.test", user
          assert user["role"] == "Admin", user

      with subtest("Signing out of Grafana ends the oxidex session (signout_redirect_url)"):
          # Logs in, logs in again without the connector (oxidex's session), signs out at
          # Grafana's /logout, which goes through oxidex's /logout with id_token_hint and back to
          # Grafana's login page; then a new login has to go through Forgejo again.
          out = client.succeed(
              "oxidex-login-driver grafana --grafana-url ${grafanaUrl} --issuer ${issuer} --logout "
              + "--username alice --password ${alicePassword} --expect-role Admin"
          )
          logout = json.loads(out)["logout"]
          assert "id_token_hint" in logout["logout_parameters"], logout
          assert logout["landed"].startswith("${grafanaSignedOut}"), logout
          assert logout["connector_after_logout"], logout

      with subtest("The same login as Grafana's OAuth client does it, keeping the tokens"):
          out = client.succeed("${driverOidc} --expect-group sso --expect-group sso:admins --save-tokens /tmp/tokens.json")
          first = json.loads(out)
          assert first["has_refresh_token"], first
          assert first["role"] == "Admin", first

      with subtest("A wrong Forgejo password gives no token"):
          client.succeed(
              "oxidex-login-driver oidc --issuer ${issuer} --client-id grafana "
              + "--client-secret ${grafanaClientSecret} --redirect-uri ${grafanaCallback} "
              + "--username alice --password wrong --expect-failure rejected"
          )

      with subtest("Refresh tokens survive a restart of oxidex (SQLite in the state directory)"):
          idp.succeed("systemctl restart oxidex.service")
          idp.wait_for_unit("oxidex.service")
          idp.wait_for_open_port(5556)
          idp.succeed("test -s /var/lib/oxidex/oxidex.db")
          out = client.succeed(
              "oxidex-login-driver refresh --tokens /tmp/tokens.json "
              + "--client-secret ${grafanaClientSecret} --role-map 'sso:admins=Admin,sso=Viewer'"
          )
          refreshed = json.loads(out)
          assert refreshed["sub"] == first["sub"], (refreshed, first)
          assert "sso:admins" in refreshed["groups"], refreshed
          # and the rotated one works once more
          client.succeed("oxidex-login-driver refresh --tokens /tmp/tokens.json --client-secret ${grafanaClientSecret}")

      with subtest("The unit is sandboxed"):
          print(idp.succeed("systemd-analyze security oxidex.service | tail -n 1"))
    '';
}
