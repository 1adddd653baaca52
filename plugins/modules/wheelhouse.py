# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Documentation for the wheelhouse action plugin (it runs on the controller only)."""

DOCUMENTATION = r"""
module: wheelhouse
short_description: Download wheels for a host's Python and platform on the controller
description:
  - Runs C(pip download --only-binary=:all:) on the controller for the given Python version and
    architecture (manylinux wheels for glibc 2.17 to 2.34) and packs the result as
    C(wheelhouse/*.whl) in a tarball under the cache directory. An existing tarball for the same
    requirements, Python and architecture is reused.
  - The role pushes the tarball and installs with C(pip --no-index --find-links).
  - Runs on the controller only.
version_added: 0.1.0
options:
  requirements:
    description: Requirements file content.
    type: str
    required: true
  python_version:
    description: The host's Python version (C(3.11) or C(3.11.2)).
    type: str
    required: true
  architecture:
    description: The host's architecture (C(x86_64) or C(aarch64)).
    type: str
    default: x86_64
  cache_dir:
    description: Controller cache directory (default C(~/.cache/microsvc)).
    type: path
  index_url:
    description: Package index to download from (default pip's configuration).
    type: str
author:
  - microsvc maintainers
"""

EXAMPLES = r"""
- name: Build the wheelhouse on the controller
  microsvc.deploy.wheelhouse:
    requirements: "Django>=5.2,<5.3\n"
    python_version: "3.11.2"
    architecture: x86_64
  register: wheels
"""

RETURN = r"""
archive:
  description: Path of the tarball on the controller.
  returned: always
  type: str
"""
