"""Migrations that never corrupt data, with service1's database in PostgreSQL on
microsvc-mh-db, shared by both app hosts.

In order: check mode shows a new release's migration plan and applies nothing; a pre-migrate
command that fails fails the deploy before any migration; two rollouts started together (one
through both app hosts, one limited to app2, so each would migrate on another host) apply the
migration once, under the service's advisory lock, the other waiting for it; a rollback across
that migration is refused by the service's policy, then allowed when forced, naming it.

The new migration records, in the database, the host that ran it, whether the service's advisory
lock was held while it ran, and whether a session of the other rollout waited for that lock.
"""

import os
import shlex
import shutil
import sys
import zlib

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import PROJECT, Playbook, http, run_playbook
from multihost_hosts import APP1, APP2, GW, SCENARIO_SERVICES, inventory

# The helper's advisory lock of service1 (roles/uwsgi_emperor/files/microsvc-migrate).
NAMESPACE = zlib.crc32(b"microsvc.deploy") & 0x7FFFFFFF
KEY = zlib.crc32(b"service1") & 0x7FFFFFFF
LOG = "/opt/www/service1/deploy.log"

MIGRATION = '''"""Written by the multihost scenario's test: runs once per database."""

import socket
import time

from django.db import migrations, models

NAMESPACE, KEY = %d, %d
LOCKS = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = %%s "
         "AND classid::bigint = %%s AND objid::bigint = %%s AND objsubid = 2")


def record(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(LOCKS, [True, NAMESPACE, KEY])
        held = cursor.fetchone()[0] == 1
        # The other rollout reaches its migrate step meanwhile and waits for the lock.
        waited, deadline = False, time.time() + 90
        while not waited and time.time() < deadline:
            cursor.execute(LOCKS, [False, NAMESPACE, KEY])
            waited = cursor.fetchone()[0] > 0
            time.sleep(0.5)
    apps.get_model("api", "Rollout").objects.create(host=socket.gethostname(), lock_held=held, other_waited=waited)


class Migration(migrations.Migration):
    dependencies = (("api", "0001_initial"),)
    operations = (
        migrations.CreateModel(name="Rollout", fields=[
            ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("host", models.CharField(max_length=100)),
            ("lock_held", models.BooleanField()),
            ("other_waited", models.BooleanField()),
        ]),
        migrations.RunPython(record, migrations.RunPython.noop),
    )
''' % (NAMESPACE, KEY)

MODEL = '''

class Rollout(models.Model):
    host = models.CharField(max_length=100)
    lock_held = models.BooleanField()
    other_waited = models.BooleanField()
'''


def sql(db, query):
    return db.check_output("runuser -u postgres -- psql -d service1 -tA -F ' ' -c %s" % shlex.quote(query))


@pytest.fixture(scope="module")
def state():
    return {}


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    """service1 with a new migration (and its model)."""
    base = tmp_path_factory.mktemp("pg-code")
    dest = base / "service1"
    shutil.copytree(os.path.join(PROJECT, "samples", "service1"), dest,
                    ignore=shutil.ignore_patterns("__pycache__", "data-local"))
    (dest / "api" / "migrations" / "0002_rollout.py").write_text(MIGRATION)
    models = dest / "api" / "models.py"
    models.write_text(models.read_text() + MODEL)
    return dest


def services(code=None, **django):
    with open(SCENARIO_SERVICES, encoding="utf-8") as handle:
        listed = yaml.safe_load(handle)["microsvc_services"]
    for svc in listed:
        if svc["name"] == "service1":
            if code is not None:
                svc["source"] = str(code)
            svc["django"] = dict(svc["django"], **django)
    return listed


def currents(*hosts):
    return [h.check_output("readlink /opt/www/service1/current").split("/")[-1] for h in hosts]


def text_of(output):
    return " ".join(output.split())


def test_both_app_hosts_share_the_database_and_migrated_it_once(app1, app2, db):
    assert sql(db, "SELECT count(*) FROM django_migrations WHERE app = 'api' AND name = '0001_initial'") == "1"
    log = app1.file(LOG).content_string
    assert "holding the migration lock of service 'service1' (advisory lock %d/%d)" % (NAMESPACE, KEY) in log
    assert "Applying api.0001_initial... OK" in log
    assert (app1.file(LOG).mode, app1.file(LOG).user, app1.file(LOG).group) == (0o640, "root", "service1")
    # The first app host migrates; the other never ran migrate: its deploy log, if any, records only
    # the releases it put live (playbooks/releases.yml reads those lines).
    other = app2.file(LOG).content_string if app2.file(LOG).exists else ""
    assert all(" live: deployed by " in line for line in other.splitlines() if line.startswith("=== ")), other
    assert "Applying" not in other and "migration lock" not in other
    for app in (app1, app2):
        assert not app.file("/opt/www/service1/shared/data/db.sqlite3").exists


def test_check_mode_shows_the_migration_plan_and_applies_nothing(app1, app2, db, code, tmp_path, state):
    state["before"] = currents(app1, app2)
    log_before = app1.file(LOG).content_string
    rc, out = run_playbook(inventory(str(tmp_path / "inv"), services(code)),
                           args=["--check", "-e", "deploy_services=service1"])
    assert rc == 0, out
    assert "service1: migrate would apply api.0002_rollout" in out, out
    assert "Create model Rollout" in out and "Raw Python operation" in out, out
    assert sql(db, "SELECT count(*) FROM django_migrations WHERE name = '0002_rollout'") == "0"
    assert sql(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'api_rollout'") == "0"
    assert currents(app1, app2) == state["before"]
    assert app1.file(LOG).content_string == log_before
    assert app1.run("ls -d /tmp/microsvc-plan-*").rc != 0  # the temporary release is gone


def test_a_failing_pre_migrate_command_fails_the_deploy_before_any_migration(gw, app1, app2, db, code, tmp_path,
                                                                             state):
    failing = ["python", "-c", "import sys; print('snapshot failed'); sys.exit(4)"]
    rc, out = run_playbook(inventory(str(tmp_path / "inv"), services(code, pre_migrate=failing)),
                           args=["-e", "deploy_services=service1"])
    assert rc != 0
    message = text_of(out)
    assert "service 'service1': deploy of release" in message and "failed at migrate" in message, out
    assert "pre-migrate command failed (exit status 4); no migration was applied: snapshot failed" in message, out
    assert sql(db, "SELECT count(*) FROM django_migrations WHERE name = '0002_rollout'") == "0"
    assert currents(app1, app2) == state["before"]
    assert all(http(gw, "/api/service1/health/")["status"] == 200 for _ in range(4))
    log = app1.file(LOG).content_string
    assert "migrate FAILED\n" in log and "pre-migrate command: python -c import sys; print('snapshot failed')" in log
    assert "FAILED: the pre-migrate command failed (exit status 4)" in log


def test_two_rollouts_started_together_migrate_once_under_the_lock(gw, app1, app2, db, code, tmp_path, state):
    # The pre-migrate command leaves a mark in the service's data directory of the host that ran it.
    mark = ["python", "-c", "import os; open(os.environ['MICROSVC_DATA_DIR'] + '/pre-migrate-ran', 'w').write('1')"]
    listed = services(code, pre_migrate=mark)
    everywhere = Playbook(inventory(str(tmp_path / "both"), listed), args=["-e", "deploy_services=service1"])
    app2_only = Playbook(inventory(str(tmp_path / "app2"), listed),
                         args=["-e", "deploy_services=service1", "--limit", "%s,%s" % (GW, APP2)])
    rc_all, out_all = everywhere.wait()
    rc_app2, out_app2 = app2_only.wait()
    assert rc_all == 0, out_all
    assert rc_app2 == 0, out_app2
    rows = sql(db, "SELECT host, lock_held, other_waited FROM api_rollout").splitlines()
    assert len(rows) == 1, rows
    host, held, waited = rows[0].split()
    assert host in (APP1, APP2) and held == "t" and waited == "t", rows
    assert sql(db, "SELECT count(*) FROM django_migrations WHERE name = '0002_rollout'") == "1"
    other = {APP1: app2, APP2: app1}[host]
    migrated = {APP1: app1, APP2: app2}[host]
    assert "Applying api.0002_rollout... OK" in migrated.file(LOG).content_string
    waiter_log = text_of(other.file(LOG).content_string)
    assert ("waiting for the migration lock of service 'service1' (advisory lock %d/%d), held by microsvc-migrate "
            "service1 on %s" % (NAMESPACE, KEY, host)) in waiter_log, waiter_log
    assert "No migrations to apply." in waiter_log
    assert migrated.file("/opt/www/service1/shared/data/pre-migrate-ran").exists
    assert not other.file("/opt/www/service1/shared/data/pre-migrate-ran").exists
    assert currents(app1)[0] == currents(app2)[0] != state["before"][0]
    assert all(http(gw, "/api/service1/health/")["status"] == 200 for _ in range(6))
    state["after"] = currents(app1)[0]


def test_a_rollback_across_the_migration_is_refused_by_policy_and_allowed_when_forced(gw, app1, app2, db, code,
                                                                                      tmp_path, state):
    listed = services(code, rollback_policy="refuse")
    rc, out = run_playbook(inventory(str(tmp_path / "refused"), listed), "playbooks/rollback.yml",
                           ["-e", "service=service1"])
    assert rc != 0
    message = text_of(out)
    assert ("service 'service1': rolling back from release %s to %s would leave migrations applied that release %s "
            "does not have: api.0002_rollout" % (state["after"], state["before"][0], state["before"][0])) in message, out
    assert "-e rollback_across_migrations=true" in message
    assert currents(app1, app2) == [state["after"]] * 2
    assert "[%s]" % APP2 not in out.split("PLAY [Roll back]", 1)[1].split("PLAY RECAP")[0]

    rc, out = run_playbook(inventory(str(tmp_path / "forced"), listed), "playbooks/rollback.yml",
                           ["-e", "service=service1", "-e", "rollback_across_migrations=true"])
    assert rc == 0, out
    message = text_of(out)
    assert ("Migrations that stay applied in the database (release %s does not have them): api.0002_rollout."
            % state["before"][0]) in message, out
    assert currents(app1, app2) == state["before"]
    assert all(http(gw, "/api/service1/health/")["status"] == 200 for _ in range(6))
    assert sql(db, "SELECT count(*) FROM django_migrations WHERE name = '0002_rollout'") == "1"
    assert "to %s: forced (rollback_across_migrations)" % state["before"][0] in app1.file(LOG).content_string
