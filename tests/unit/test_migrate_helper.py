"""The migrate helper (roles/uwsgi_emperor/files/microsvc-migrate) against the Django sample on
SQLite, run as microsvc-run runs it: the controller's Python (which has Django) in a copy of
the release. PostgreSQL and its advisory lock are exercised by the multihost scenario; here:
the plan, the pre-migrate command (only when there is work; its failure applies nothing), the
migrations a rollback leaves applied, and the sample's database settings."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import migrations

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "roles" / "uwsgi_emperor" / "files" / "microsvc-migrate"
SAMPLE = ROOT / "samples" / "service1"
NEW_MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = (("api", "0001_initial"),)
    operations = (
        migrations.CreateModel(name="Note", fields=[("id", models.BigAutoField(primary_key=True)),
                                                    ("text", models.CharField(max_length=10))]),
    )
'''


@pytest.fixture()
def release(tmp_path):
    """A release of the sample (as unpacked on a host) and its data directory."""
    dest = tmp_path / "release-a"
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "data-local"))
    (tmp_path / "data").mkdir()
    return dest


def helper(release, action, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DB_"))}
    env.update(MICROSVC_DATA_DIR=str(release.parent / "data"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, str(HELPER), "--service", "service1", "--manage", "manage.py", *args,
                           action], cwd=release, env=env, capture_output=True, text=True, timeout=120, check=False)
    result, text = migrations.parse(proc.stdout)
    assert result is not None, proc.stdout + proc.stderr
    return proc.returncode, result, text + proc.stderr


def applied(release):
    db = release.parent / "data" / "db.sqlite3"
    with sqlite3.connect(db) as conn:
        try:
            return sorted("%s.%s" % row for row in conn.execute("select app, name from django_migrations"))
        except sqlite3.OperationalError:
            return []


def test_plan_shows_what_migrate_would_do_and_applies_nothing(release):
    code, result, text = helper(release, "plan")
    assert code == 0 and result["ok"], text
    assert "api.0001_initial" in result["pending"] and "contenttypes.0001_initial" in result["pending"]
    assert "Planned operations:" in result["plan"] and "Create model Item" in result["plan"]
    assert applied(release) == []


def test_a_failing_pre_migrate_command_fails_before_any_migration(release):
    code, result, _ = helper(release, "migrate", "--pre-migrate",
                             json.dumps(["python", "-c", "import sys; print('backup refused'); sys.exit(3)"]))
    assert code == 1 and not result["ok"]
    assert "pre-migrate command failed (exit status 3)" in result["error"] and "backup refused" in result["error"]
    assert "no migration was applied" in result["error"]
    assert applied(release) == []


def test_migrate_runs_the_pre_migrate_command_only_when_there_is_work(release):
    backup = ["python", "-c", "import pathlib; pathlib.Path('../backup-taken').write_text('yes')"]
    code, result, text = helper(release, "migrate", "--pre-migrate", json.dumps(backup))
    assert code == 0 and result["ok"], text
    assert (release.parent / "backup-taken").read_text() == "yes"
    assert "api.0001_initial" in result["applied"] and result["pending"] == result["applied"]
    assert result["lock"] is None and "no advisory lock here" in text  # sqlite: one host, nothing to lock
    assert "Planned operations:" in text and "Applying api.0001_initial" in text
    assert "api.0001_initial" in applied(release)
    (release.parent / "backup-taken").unlink()
    code, result, text = helper(release, "migrate", "--pre-migrate", json.dumps(backup))
    assert code == 0 and result["pending"] == [] and result["applied"] == [], text
    assert not (release.parent / "backup-taken").exists()


def test_a_rollback_names_the_migrations_the_older_release_lacks(release):
    newer = release.parent / "release-b"
    shutil.copytree(release, newer)
    (newer / "api" / "migrations" / "0002_note.py").write_text(NEW_MIGRATION)
    assert helper(newer, "migrate")[0] == 0
    code, result, text = helper(release, "behind")
    assert code == 0 and result["behind"] == ["api.0002_note"], text
    assert helper(newer, "behind")[1]["behind"] == []
    # A row of an app that neither release has (removed long ago) is not the rollback's doing.
    with sqlite3.connect(release.parent / "data" / "db.sqlite3") as conn:
        conn.execute("insert into django_migrations (app, name, applied) values ('gone', '0001_initial', "
                     "'2020-01-01')")
    stale_a, stale_b = helper(release, "behind")[1]["behind"], helper(newer, "behind")[1]["behind"]
    assert stale_a == ["api.0002_note", "gone.0001_initial"] and stale_b == ["gone.0001_initial"]
    assert migrations.stay_applied(stale_a, stale_b) == ["api.0002_note"]


def test_a_manage_py_that_never_reaches_django_is_reported(release):
    (release / "manage.py").write_text("print('not a Django command line')\n")
    code, result, _ = helper(release, "plan")
    assert code == 1 and "did not call Django's execute_from_command_line" in result["error"]


def test_the_sample_uses_postgresql_when_the_environment_names_a_server(release):
    probe = "import json, service1.settings as s; print(json.dumps(s.DATABASES['default'], default=str))"
    env = dict(os.environ, DB_HOST="10.0.0.5", DB_NAME="shop", DB_USER="shop", DB_PASSWORD="pw",
               MICROSVC_DATA_DIR=str(release.parent / "data"))
    out = subprocess.run([sys.executable, "-c", probe], cwd=release, env=env, capture_output=True, text=True,
                         check=True).stdout
    db = json.loads(out)
    assert db["ENGINE"] == "django.db.backends.postgresql" and db["HOST"] == "10.0.0.5"
    assert (db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == ("5432", "shop", "shop", "pw")
    env.pop("DB_HOST")
    out = subprocess.run([sys.executable, "-c", probe], cwd=release, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out)["ENGINE"] == "django.db.backends.sqlite3"


def test_the_deploy_log_follows_no_link_and_is_the_services_group_only(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    os.symlink(target, tmp_path / migrations.LOG_NAME)
    assert migrations.log(str(tmp_path), os.getgid(), "deploy", "text") is False
    assert target.read_text() == "untouched\n"
    os.unlink(tmp_path / migrations.LOG_NAME)
    assert migrations.log(str(tmp_path), os.getgid(), "deploy of release abc: migrate", "Applying x... OK")
    log = (tmp_path / migrations.LOG_NAME)
    assert "deploy of release abc: migrate\nApplying x... OK\n" in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o640"


def test_the_migrate_step_command_carries_the_pre_migrate_command():
    argv = migrations.helper_argv("migrate", "billing", "src/manage.py", pre_migrate=["pg_dump", "-f", "x y"],
                                  pre_migrate_timeout=60)
    assert argv[:2] == ["python", migrations.HELPER] and argv[-1] == "migrate"
    assert json.loads(argv[argv.index("--pre-migrate") + 1]) == ["pg_dump", "-f", "x y"]
    assert argv[argv.index("--manage") + 1] == "src/manage.py" and "60" in argv
