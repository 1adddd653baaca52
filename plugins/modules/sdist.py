# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Documentation for the sdist action plugin (it runs on the controller only)."""

DOCUMENTATION = r"""
module: sdist
short_description: Download a package's source distribution and its build requirements on the controller
description:
  - "Runs C(pip download --no-binary=:all: --no-deps) for one pinned package and C(pip download
    --only-binary=:all:) for its pinned build requirements on the controller, and packs the result as
    C(sdist/*) in a tarball under the cache directory. An existing tarball for the same package, build
    requirements and index is reused."
  - The uwsgi_emperor role pushes the tarball and builds uWSGI on the host with C(pip install --no-index
    --find-links), for hosts without access to a package index.
  - Every requirement must be pinned (C(name==version)).
  - Runs on the controller only.
version_added: 0.1.0
options:
  package:
    description: The package to download as a source distribution, pinned (C(uwsgi==2.0.28)).
    type: str
    required: true
  build_requirements:
    description: Pinned requirements that building it needs (pure-Python wheels).
    type: list
    elements: str
    default: []
  cache_dir:
    description: Controller cache directory (default C(~/.cache/microsvc)).
    type: path
  index_url:
    description: Package index to download from (default pip's configuration).
    type: str
notes:
  - Why not a builtin - C(ansible.builtin.pip) installs and cannot download sources with pinned build requirements
    into a reusable tarball.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Download uWSGI's source on the controller
  microsvc.deploy.sdist:
    package: uwsgi==2.0.28
    build_requirements: [setuptools==78.1.1, wheel==0.45.1]
  register: uwsgi_sdist
"""

RETURN = r"""
archive:
  description: Path of the tarball on the controller.
  returned: always
  type: str
"""
