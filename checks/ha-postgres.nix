# VM test of two oxidex replicas on one PostgreSQL.
#   db          services.postgresql on TCP, the oxidex role with a scram-sha-256 password
#   idp1, idp2  services.oxidex with postgres storage; the password arrives as a credential
#   client      runs checks/login-driver/login_driver.py
# A login through idp1, refreshes alternating between the replicas, then idp1 shut down and
# idp2 serving every refresh of the tokens idp1 issued.
# Called from the flake: pkgs.testers.runNixOSTest (import ./checks/ha-postgres.nix { … }).
{
  pkgs,
  oxidexModule,
  ...
}:
let
  inherit (pkgs) lib;

  # The issuer is one name for both replicas, as behind a load balancer; it is idp1's, and the
  # script sends token requests to each replica directly.
  issuer = "http://idp1:5556/dex";
  redirectUri = "http://app.test/callback";

  # Test-only secrets. They go through the store here; real deployments keep them out of it.
  dbPassword = "db-password-for-tests";
  clientSecret = "client-secret-for-tests";
  # bcrypt (cost 10) of "password"
  aliceHash = "$2b$10$sD0K5NZrR9THssaos8nEde5ywauRcVXC6frrFKxi6lUuERHKIbAdi";
  alicePassword = "password";

  credentialsDirectory = "/run/credentials/oxidex.service";

  loginDriver = pkgs.writers.writePython3Bin "oxidex-login-driver" {
    flakeIgnore = [ "E501" ];
  } (builtins.readFile ./login-driver/login_driver.py);

  idp = {
    services.oxidex = {
      enable = true;
      openFirewall = true;
      database.createLocally = false;
      settings = {
        inherit issuer;
        web.http = "0.0.0.0:5556";
        telemetry.http = "127.0.0.1:5558";
        oauth2.skipApprovalScreen = true;
        storage = {
          type = "postgres";
          config = {
            host = "db";
            database = "oxidex";
            user = "oxidex";
            passwordFile = "${credentialsDirectory}/postgres-password";
            # No TLS inside the test network; the password still never crosses it
            # (scram-sha-256).
            ssl.mode = "disable";
          };
        };
        enablePasswordDB = true;
        staticPasswords = [
          {
            email = "alice@example.test";
            username = "alice";
            userID = "5d8a4a8e-6f0e-4f0b-8c59-0d6d2f6c1a11";
            hashFile = "${credentialsDirectory}/alice-hash";
          }
        ];
        staticClients = [
          {
            id = "app";
            name = "App";
            redirectURIs = [ redirectUri ];
            secretFile = "${credentialsDirectory}/app-secret";
          }
        ];
      };
      credentials = {
        postgres-password = "/etc/oxidex/postgres-password";
        alice-hash = "/etc/oxidex/alice-hash";
        app-secret = "/etc/oxidex/app-secret";
      };
    };
    environment.etc = {
      "oxidex/postgres-password" = {
        mode = "0400";
        text = dbPassword;
      };
      "oxidex/alice-hash" = {
        mode = "0400";
        text = aliceHash;
      };
      "oxidex/app-secret" = {
        mode = "0400";
        text = clientSecret;
      };
    };
  };
in
{
  name = "oxidex-ha-postgres";

  defaults = {
    imports = [ oxidexModule ];
  };

  nodes = {
    db = {
      services.postgresql = {
        enable = true;
        enableTCPIP = true;
        ensureDatabases = [ "oxidex" ];
        ensureUsers = [
          {
            name = "oxidex";
            ensureDBOwnership = true;
          }
        ];
        # Only the oxidex role, only its database, only from the test network, only with
        # scram-sha-256 (PostgreSQL's default password_encryption).
        authentication = ''
          host oxidex oxidex samenet scram-sha-256
        '';
      };
      networking.firewall.allowedTCPPorts = [ 5432 ];
    };

    idp1 = idp;
    idp2 = idp;

    client = {
      environment.systemPackages = [ loginDriver ];
    };
  };

  testScript =
    { nodes, ... }:
    ''
    import json
    import shlex

    replicas = {"idp1": idp1, "idp2": idp2}
    driver = "oxidex-login-driver"
    client_args = "--client-secret ${clientSecret}"


    def psql(sql):
        return db.succeed(f"runuser -u postgres -- psql -tA -d oxidex -c {shlex.quote(sql)}").strip()


    def point_tokens_at(name):
        """Send the next refresh to one replica, as a load balancer would."""
        saved = json.loads(client.succeed("cat /tmp/tokens.json"))
        saved["token_endpoint"] = f"http://{name}:5556/dex/token"
        saved["userinfo_endpoint"] = f"http://{name}:5556/dex/userinfo"
        client.succeed(f"printf %s {shlex.quote(json.dumps(saved))} > /tmp/tokens.json")


    def refresh_at(name, sub):
        point_tokens_at(name)
        before = json.loads(client.succeed("cat /tmp/tokens.json"))["refresh_token"]
        out = json.loads(client.succeed(f"{driver} refresh --tokens /tmp/tokens.json {client_args}"))
        assert out["sub"] == sub, (name, out)
        assert out["rotated"], (name, out)
        after = json.loads(client.succeed("cat /tmp/tokens.json"))["refresh_token"]
        assert after != before, name
        return out


    with subtest("PostgreSQL: the oxidex role has a scram-sha-256 password"):
        db.start()
        db.wait_for_unit("postgresql.target")
        psql("ALTER ROLE oxidex PASSWORD '${dbPassword}'")
        stored = psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'oxidex'")
        assert stored.startswith("SCRAM-SHA-256$"), stored
        db.wait_for_open_port(5432)

    with subtest("Both replicas start on the shared database"):
        idp1.start()
        idp2.start()
        client.start()
        for name, machine in replicas.items():
            machine.wait_for_unit("oxidex.service")
            machine.wait_for_open_port(5556)
            machine.wait_until_succeeds("curl -sf http://127.0.0.1:5558/healthz/ready")
            client.wait_until_succeeds(f"curl -sf http://{name}:5556/dex/.well-known/openid-configuration")
        tables = psql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert int(tables) > 0, tables

    with subtest("Both replicas publish the same signing keys"):
        def same_keys(_last_try):
            a = json.loads(client.succeed("curl -sf http://idp1:5556/dex/keys"))
            b = json.loads(client.succeed("curl -sf http://idp2:5556/dex/keys"))
            return a == b and len(a["keys"]) > 0

        retry(same_keys, timeout=90)

    with subtest("Log in through idp1"):
        out = client.succeed(
            f"{driver} oidc --issuer ${issuer} --client-id app {client_args} "
            + "--redirect-uri ${redirectUri} --username alice@example.test --password ${alicePassword} "
            + "--expect-email alice@example.test --save-tokens /tmp/tokens.json"
        )
        first = json.loads(out)
        assert first["has_refresh_token"], first
        sub = first["sub"]

    with subtest("Refresh through idp2, then alternate"):
        refresh_at("idp2", sub)
        for name in ["idp1", "idp2", "idp1"]:
            refresh_at(name, sub)

    with subtest("The database password reaches neither the store nor the journal"):
        for name, machine in replicas.items():
            stored = machine.succeed("cat ${nodes.idp1.services.oxidex.configFile}")
            assert '"postgres"' in stored, stored
            assert "${dbPassword}" not in stored, f"{name}: the database password is in the store"
            journal = machine.succeed("journalctl --unit oxidex.service --no-pager --output cat")
            assert journal.strip(), f"{name}: oxidex's journal is empty"
            assert "${dbPassword}" not in journal, f"{name}: the database password is in the journal"

    with subtest("idp1 down: idp2 serves every refresh of the token idp1 issued last"):
        idp1.shutdown()
        for _ in range(5):
            refresh_at("idp2", sub)
        idp2.succeed("curl -sf http://127.0.0.1:5558/healthz/ready")
  '';
}
