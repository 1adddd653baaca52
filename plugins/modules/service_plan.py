# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Documentation for the service_plan action plugin (it runs on the controller only)."""

DOCUMENTATION = r"""
module: service_plan
short_description: Validate the service list and compute the plan
description:
  - Validates every item of the service list against the entry point C(service) of the role
    C(microsvc.deploy.service_plan) (unknown keys, types, choices, defaults), then checks safe names,
    duplicate names, routes and sockets, route syntax and nesting, and that each selected source exists.
  - Fails before any host is touched, with one line per error naming the service and the field.
  - Returns the facts C(microsvc_plan) (normalized services with computed paths, present/absent/selected
    names), C(microsvc_placements) and C(microsvc_plans), computed once for every host of the play; the
    role C(microsvc.deploy.service_plan) keeps them on the planning host and gives every host its plan
    (C(microsvc_plan)) and its own placement (C(microsvc_placement)).
  - Runs on the controller only.
version_added: 0.1.0
options:
  services:
    description: The service list (usually C(microsvc_services)).
    type: list
    elements: dict
    required: true
  defaults:
    description: Values applied to every service before its own entry.
    type: dict
    default: {}
  selected:
    description: Names to deploy, as a list or a comma-separated string; empty selects all.
    type: raw
  root:
    description: Directory under which each service gets its own directory.
    type: path
    default: /opt/www
  route_prefix:
    description: Route of a service that sets none is C(<route_prefix><name>/).
    type: str
    default: /api/
  base_dir:
    description:
      - Directory against which relative source paths are resolved (the role passes the inventory's
        directory, so a relative source path works from any working directory).
    type: path
  check_sources:
    description: Check that the sources of selected present services exist on the controller.
    type: bool
    default: true
  require_vault:
    description:
      - Refuse C(env) values whose names match I(secret_names) unless they come from ansible-vault,
        an inline C(!vault) value, or any value of a vault-encrypted vars file (the latter is
        recognised on ansible-core 2.19 and newer, which records where each value came from).
      - A value that a template builds around a secret (a database URL with the password inside, for
        example) no longer carries that mark and is refused; keep the whole value in vault.
    type: bool
    default: false
  secret_names:
    description: Shell-style patterns (case-insensitive) of environment variable names that hold secrets.
    type: list
    elements: str
    default: []
  gateway_hosts:
    description: The inventory's gateway hosts, in inventory order; empty means every host of the play.
    type: list
    elements: str
  app_hosts:
    description: The inventory's app hosts, in inventory order; empty means every host of the play.
    type: list
    elements: str
notes:
  - Why not a builtin - the service list's cross-field checks and the plan are computed in Python on the controller,
    with unit tests.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Validate the service list
  microsvc.deploy.service_plan:
    services: "{{ microsvc_services }}"
    selected: "{{ deploy_services | default('') }}"
"""

RETURN = r"""
ansible_facts:
  description: The plan.
  returned: success
  type: dict
  contains:
    microsvc_plan:
      description: Normalized services, the selection and the shared settings (C(settings)).
      type: dict
    microsvc_placements:
      description:
        - Host name to its placement, for every host of the play (C(tcp), C(routes), C(migrate),
          C(gateway_host), C(gateway_url), C(check_base), C(health_base), C(plan)).
      type: dict
    microsvc_plans:
      description: Every distinct plan of the run; C(microsvc_placements[host].plan) indexes it.
      type: list
"""
