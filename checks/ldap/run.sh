#!/usr/bin/env bash
# The ldap connector against a real OpenLDAP: starts a throwaway slapd (its own
# slapd.conf and database in a temp dir, loopback ports, plain+StartTLS and LDAPS
# with a CA generated here), loads users and groups, and runs the integration
# tests in tests/it/ldap.rs, which fail (not skip) when OXIDEX_LDAP_TEST=1.
# Installs Debian's slapd and ldap-utils when missing, without letting the
# package start or own a directory service. slapd is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v slapd >/dev/null 2>&1 && [ ! -x /usr/sbin/slapd ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "slapd is missing and we are not root: apt-get install slapd ldap-utils" >&2
    exit 1
  fi
  # policy-rc.d exit 101: package scripts must not start services. Only ours is removed.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slapd ldap-utils
  if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
slapd_bin=$(command -v slapd || echo /usr/sbin/slapd)

work=$(mktemp -d)
slapd_pid=""
cleanup() {
  if [ -n "$slapd_pid" ]; then kill "$slapd_pid" 2>/dev/null || true; wait "$slapd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port=$(free_port)
tls_port=$(free_port)

# A throwaway CA and a server certificate for localhost/127.0.0.1; a second,
# unrelated CA for the "rootCA does not match" case.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=oxidex test LDAP CA" \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=some other CA" \
  -keyout "$work/other-ca.key" -out "$work/other-ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$work/ext.cnf"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/ext.cnf" -out "$work/server.crt" 2>/dev/null

mkdir -p "$work/db"
cat >"$work/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $work/slapd.pid
argsfile $work/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile $work/ca.crt
TLSCertificateFile $work/server.crt
TLSCertificateKeyFile $work/server.key
database mdb
maxsize 10485760
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw admin
directory $work/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
CONF

# Unprivileged when we can: the package's openldap user, owning only the temp dir.
run_as=()
if [ "$(id -u)" -eq 0 ] && id openldap >/dev/null 2>&1; then
  chown -R openldap:openldap "$work"
  chmod 755 "$work"
  run_as=(-u openldap -g openldap)
fi
"$slapd_bin" -d 0 -f "$work/slapd.conf" "${run_as[@]}" \
  -h "ldap://127.0.0.1:$port/ ldaps://127.0.0.1:$tls_port/" >"$work/slapd.log" 2>&1 &
slapd_pid=$!

for _ in $(seq 1 50); do
  if ldapsearch -x -H "ldap://127.0.0.1:$port" -b "" -s base >/dev/null 2>&1; then break; fi
  if ! kill -0 "$slapd_pid" 2>/dev/null; then cat "$work/slapd.log" >&2; echo "slapd died" >&2; exit 1; fi
  sleep 0.2
done

b64() { printf '%s' "$1" | base64 -w0; }
cat >"$work/data.ldif" <<LDIF
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: uid=jane,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: jane
cn: Jane Doe
sn: Doe
mail: jane@example.org
userPassword: foo

dn: uid=john,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: john
cn: John Smith
sn: Smith
mail: john@example.org
userPassword: bar

dn: uid=loner,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: loner
cn: Lone Wolf
sn: Wolf
mail: loner@example.org
userPassword: alone

dn:: $(b64 "uid=jöhn,ou=people,dc=example,dc=org")
objectClass: inetOrgPerson
uid:: $(b64 "jöhn")
cn:: $(b64 "Jöhn Ümlaut")
sn: Umlaut
mail: johen@example.org
userPassword: umlaut

dn: cn=admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: admins
member: uid=jane,ou=people,dc=example,dc=org
member: uid=john,ou=people,dc=example,dc=org

dn: cn=developers,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: developers
member: uid=jane,ou=people,dc=example,dc=org

dn: cn=engineering,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: engineering
member: cn=developers,ou=groups,dc=example,dc=org
LDIF
# A nesting cycle: developers ⊂ engineering ⊂ developers.
ldif_cycle="dn: cn=developers,ou=groups,dc=example,dc=org
changetype: modify
add: member
member: cn=engineering,ou=groups,dc=example,dc=org
"

ldapadd -x -H "ldap://127.0.0.1:$port" -D "cn=admin,dc=example,dc=org" -w admin -f "$work/data.ldif" >/dev/null
printf '%s' "$ldif_cycle" | ldapmodify -x -H "ldap://127.0.0.1:$port" -D "cn=admin,dc=example,dc=org" -w admin >/dev/null

export OXIDEX_LDAP_TEST=1
export OXIDEX_LDAP_HOST="127.0.0.1:$port"
export OXIDEX_LDAP_TLS_HOST="127.0.0.1:$tls_port"
export OXIDEX_LDAP_CA="$work/ca.crt"
export OXIDEX_LDAP_OTHER_CA="$work/other-ca.crt"
cargo test --locked --test it ldap:: -- --test-threads=2
