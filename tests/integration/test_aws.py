"""The EC2 parts against a local AWS endpoint (moto's server on 127.0.0.1, real boto3 clients):
the production dynamic inventory (inventories/production/aws_ec2.yml, unchanged, pointed at the
endpoint with AWS_URL), the split-layout plan against it, and env secrets read from SSM
Parameter Store and Secrets Manager. No container and no host is contacted."""

from __future__ import annotations

import grp
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
PRODUCTION = os.path.join(ROOT, "inventories", "production")
REGION = "eu-west-1"  # the region aws_ec2.yml lists

# key: (Name tag, microsvc-role tag, microsvc-ami-family tag, private address); None: no such tag.
# The keys are this test's own; the instances of an autoscaling group share one Name ("web"),
# and some instances have no Name at all.
INSTANCES = {
    "gw-1": ("gw-1", "gateway", "debian", "10.20.1.10"),
    "app-1": ("web", "app", "ubuntu", "10.20.1.11"),
    "app-2": ("web", "app", None, "10.20.1.12"),
    "app-3": (None, "app", "amazon", "10.20.1.13"),
    "both-1": ("both-1", "gateway,app", "rhel", "10.20.1.14"),
    "stopped-1": ("web", "app", "debian", "10.20.1.15"),
    "stopped-2": (None, "app", "debian", "10.20.1.17"),
    "untagged-1": ("untagged-1", None, "debian", "10.20.1.16"),
}
RUNNING = ["gw-1", "app-1", "app-2", "app-3", "both-1"]
LOGIN = {"debian": "admin", None: "admin", "ubuntu": "ubuntu", "amazon": "ec2-user", "rhel": "ec2-user"}


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """A moto server on a free loopback port, and the environment that points AWS clients
    (boto3 here, the amazon.aws plugins in ansible) at it with dummy credentials."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    home = tmp_path_factory.mktemp("aws-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_URL="http://%s:%d" % (host, port),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        # Nothing from the user's own AWS configuration.
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
    )
    yield env
    server.stop()


def client(env, service):
    return boto3.client(service, region_name=REGION, endpoint_url=env["AWS_URL"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def instances(aws):
    ec2 = client(aws, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids = {}
    for key, (name, role, family, address) in INSTANCES.items():
        tags = [] if name is None else [{"Key": "Name", "Value": name}]
        if role is not None:
            tags.append({"Key": "microsvc-role", "Value": role})
        if family is not None:
            tags.append({"Key": "microsvc-ami-family", "Value": family})
        spec = {"TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]} if tags else {}
        ids[key] = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=subnet,
            PrivateIpAddress=address, **spec,
        )["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[ids["stopped-1"], ids["stopped-2"]])
    return ids


def host(instances, key):
    """The inventory host name of the instance: its Name tag and its id, or the id alone."""
    name = INSTANCES[key][0]
    return instances[key] if name is None else "%s_%s" % (name, instances[key])


def hosts(instances, *keys):
    return sorted(host(instances, key) for key in keys)


def inventory(aws):
    proc = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", os.path.join(PRODUCTION, "aws_ec2.yml"),
                           "--list"], cwd=ROOT, env=aws, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to parse" not in proc.stderr and "Unable to parse" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout, object_hook=plain)


def plain(obj):
    """ansible-inventory marks values from the cloud as unsafe ({"__ansible_unsafe": value})."""
    return obj["__ansible_unsafe"] if set(obj) == {"__ansible_unsafe"} else obj


def members(inv, group):
    return sorted(inv.get(group, {}).get("hosts", []))


def test_inventory_has_one_host_per_running_tagged_instance_whatever_its_name(aws, instances):
    inv = inventory(aws)
    listed = set(inv["_meta"]["hostvars"])
    # Two running instances share the Name "web", one has no Name: still one host each.
    assert listed == set(hosts(instances, *RUNNING)), listed
    assert host(instances, "app-1") == "web_" + instances["app-1"]
    assert host(instances, "app-3") == instances["app-3"]
    # Stopped instances (one sharing a running one's Name, one without a Name) and untagged ones are left out.
    for key in ("stopped-1", "stopped-2", "untagged-1"):
        assert not [h for h in listed if instances[key] in h], (key, listed)
    assert members(inv, "microsvc_gateway") == hosts(instances, "both-1", "gw-1")
    assert members(inv, "microsvc_app") == hosts(instances, "app-1", "app-2", "app-3", "both-1")


def test_inventory_host_names_are_valid_inventory_names_and_carry_the_instance_id(aws, instances):
    hostvars = inventory(aws)["_meta"]["hostvars"]
    for key in RUNNING:
        name = host(instances, key)
        assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", name), name
        assert hostvars[name]["microsvc_instance_id"] == instances[key], hostvars[name]


def test_inventory_sets_private_address_and_login_user_per_ami_family(aws, instances):
    hostvars = inventory(aws)["_meta"]["hostvars"]
    for key in RUNNING:
        _name, _role, family, address = INSTANCES[key]
        one = hostvars[host(instances, key)]
        assert one["microsvc_private_address"] == address, one
        assert one["ansible_user"] == LOGIN[family], (key, one)
        assert one["ansible_host"], one


def test_split_layout_plan_runs_against_the_dynamic_inventory(aws, instances, tmp_path):
    """site.yml's first play (validation, host sorting) against the dynamic inventory, with the
    sample services instead of the production example's (whose sources live elsewhere)."""
    samples = os.path.join(ROOT, "samples")
    services = [
        {"name": "service2", "source": os.path.join(samples, "service2"), "module": "app"},
        {"name": "service3", "source": os.path.join(samples, "service3"), "wsgi_file": "wsgi.py"},
    ]
    extra = tmp_path / "services.yml"
    extra.write_text(yaml.safe_dump({"microsvc_services": services, "microsvc_source_roots": [samples]}))
    output = tmp_path / "layout.json"
    proc = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), "-i", os.path.join(PRODUCTION, "aws_ec2.yml"),
         os.path.join(ROOT, "tests", "integration", "plan_layout.yml"),
         "-e", "@%s" % extra, "-e", "layout_output=%s" % output],
        cwd=ROOT, env=aws, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "UNREACHABLE" not in out, out
    layout = json.loads(output.read_text())
    assert sorted(layout["gateways"]) == hosts(instances, "both-1", "gw-1")
    assert sorted(layout["apps"]) == hosts(instances, "app-1", "app-2", "app-3", "both-1")
    for key in RUNNING:
        name = host(instances, key)
        assert layout["plans"][name]["names"] == ["service2", "service3"], layout["plans"][name]
        assert layout["users"][name] == LOGIN[INSTANCES[key][2]]


# --- secrets from SSM Parameter Store and Secrets Manager -------------------------------------

SSM_SECRET = "ssm-s3cret-value-4711"
SM_SECRET = "secretsmanager-value-0815"
SSM = "lookup('amazon.aws.ssm_parameter', '/billing/db_password')"
SM = "lookup('amazon.aws.secretsmanager_secret', 'billing/api-token')"


@pytest.fixture(scope="module")
def secrets(aws):
    client(aws, "ssm").put_parameter(Name="/billing/db_password", Value=SSM_SECRET, Type="SecureString")
    client(aws, "secretsmanager").create_secret(Name="billing/api-token", SecretString=SM_SECRET)
    return aws


@pytest.fixture()
def short_root():
    """microsvc_root is at most 60 characters long, and may not be below /tmp: pytest's tmp_path
    is neither."""
    path = tempfile.mkdtemp(prefix="msvc-", dir="/var/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def secret_inventory(tmp_path, env_yaml, host, root="/opt/www"):
    """An inventory whose only service, billing, takes its env from `env_yaml` (YAML text, a
    mapping), with microsvc_require_vault on."""
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "code").mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"target": host}}}))
    (inv / "group_vars" / "all" / "settings.yml").write_text(yaml.safe_dump({
        "microsvc_require_vault": True,
        "microsvc_root": root,
        "microsvc_source_roots": [str(tmp_path)],
        "microsvc_services": [{"name": "billing", "source": "../code", "module": "app",
                               "env": "{{ billing_env }}"}],
    }))
    (inv / "group_vars" / "all" / "billing.yml").write_text(
        "billing_env:\n" + "".join("  " + line + "\n" for line in env_yaml.splitlines()))
    return inv


def playbook(env, inv, playbook_path, *args):
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), playbook_path] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_secrets_from_ssm_and_secrets_manager_reach_the_env_file_and_never_the_output(secrets, tmp_path, short_root):
    env_yaml = ('DB_PASSWORD: "{{ %s }}"\n'
                'API_TOKEN: "{{ billing_api_token }}"\n'  # through a variable that holds the lookup
                "LOG_LEVEL: info\n" % SSM)
    # (A private address: the vassal role's dependency re-checks the settings, its defaults included.)
    inv = secret_inventory(tmp_path, env_yaml, {"ansible_connection": "local", "microsvc_private_address": "127.0.0.1",
                                                "ansible_python_interpreter": sys.executable}, root=short_root)
    (inv / "group_vars" / "all" / "tokens.yml").write_text('billing_api_token: "{{ %s }}"\n' % SM)
    group = grp.getgrgid(os.getgid()).gr_name
    rc, out = playbook(secrets, inv, os.path.join(ROOT, "tests", "integration", "env_file.yml"),
                       "-e", "env_file_group=%s" % group, "-vv")
    assert rc == 0, out
    assert SSM_SECRET not in out and SM_SECRET not in out, "a secret reached the run's output"
    env_file = pathlib.Path(short_root) / "billing" / "env"
    content = env_file.read_text()
    assert "DB_PASSWORD=%s\n" % SSM_SECRET in content, content
    assert "API_TOKEN=%s\n" % SM_SECRET in content, content
    assert "LOG_LEVEL=info\n" in content
    st = env_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (0, os.getgid())


# Values built around a lookup, or other templates, under a secret's name: each is refused.
HOSTILE = [
    ("prefix", '"x{{ %s }}"' % SSM),
    ("suffix", '"{{ %s }}x"' % SSM),
    ("concatenation", "\"{{ %s ~ 'hunter2' }}\"" % SSM),
    ("fallback", "\"{{ %s | default('hunter2', true) }}\"" % SSM),
    ("or-fallback", "\"{{ %s or 'hunter2' }}\"" % SSM),
    ("filter", "\"{{ %s | replace('s', 'x') }}\"" % SSM),
    ("slice", '"{{ (%s)[:-1] }}"' % SSM),
    ("constant", "\"{{ 'hunter2' }}\""),
    ("other-lookup", "\"{{ lookup('ansible.builtin.env', 'HOME') }}\""),
    ("query", "\"{{ query('amazon.aws.ssm_parameter', '/billing/db_password') | first }}\""),
    ("computed-name", "\"{{ lookup('amazon.aws.ssm_parameter', '/billing/' ~ 'db_password') }}\""),
    ("unknown-option", "\"{{ lookup('amazon.aws.ssm_parameter', '/billing/db_password', on_missing='skip') }}\""),
    ("two-outputs", '"{{ %s }}{{ %s }}"' % (SSM, SSM)),
    ("unsafe-text", "!unsafe \"{{ %s }}\"" % SSM),
    ("transformed-variable", "\"{{ billing_raw | upper }}\""),
]


@pytest.mark.parametrize("value", [c[1] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_values_built_around_a_secret_lookup_are_refused(secrets, tmp_path, value):
    inv = secret_inventory(tmp_path, "DB_PASSWORD: %s\n" % value, {
        "ansible_connection": "community.docker.docker", "ansible_host": "microsvc-test-no-such-container"})
    (inv / "group_vars" / "all" / "raw.yml").write_text('billing_raw: "{{ %s }}"\n' % SSM)
    rc, out = playbook(secrets, inv, os.path.join(ROOT, "site.yml"))
    assert rc != 0, out
    assert "The service list or a setting is invalid; no host was changed." in out, out
    assert "service 'billing': field 'env.DB_PASSWORD': the name matches the secret pattern" in out, out
    assert "UNREACHABLE" not in out and "PLAY [Check the hosts" not in out, out
    assert SSM_SECRET not in out, out


def test_a_whole_lookup_passes_validation_then_needs_the_host(secrets, tmp_path):
    """The control case for the refusals: the same setup with the lookup as the whole value."""
    inv = secret_inventory(tmp_path, 'DB_PASSWORD: "{{ %s }}"\n' % SSM, {
        "ansible_connection": "community.docker.docker", "ansible_host": "microsvc-test-no-such-container"})
    rc, out = playbook(secrets, inv, os.path.join(ROOT, "site.yml"))
    assert "The service list or a setting is invalid" not in out, out
    assert "PLAY [Check the hosts" in out, out
    assert rc != 0
