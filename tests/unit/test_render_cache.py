"""Rendering many files from one template (plugins/plugin_utils/render.py): compiled once, each
file rendered with its own variables."""

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible_collections.microsvc.deploy.plugins.plugin_utils import render

TEMPLATE = trust_as_template("{% for p in ports %}listen {{ p }};\n{% endfor %}# {{ name }}\n")
OVERRIDES = dict(trim_blocks=True, lstrip_blocks=False)


def counting(templar):
    engine = templar._engine
    calls = []
    original = engine._compile_template

    def compile_template(template, options):
        calls.append(str(template))
        return original(template, options)

    engine._compile_template = compile_template
    return calls


def test_a_template_is_compiled_once_and_rendered_with_each_files_variables():
    templar = Templar(loader=DataLoader(), variables={})
    calls = counting(templar)
    render._cache_compiled(templar)
    out = []
    for name, ports in (("a", [80]), ("b", [80, 443]), ("c", [])):
        templar.available_variables = {"name": name, "ports": ports}
        out.append(templar.template(TEMPLATE, escape_backslashes=False, overrides=OVERRIDES))
    assert out == ["listen 80;\n# a\n", "listen 80;\nlisten 443;\n# b\n", "# c\n"]
    assert calls.count(str(TEMPLATE)) == 1


def test_the_output_is_the_same_as_without_the_cache():
    plain = Templar(loader=DataLoader(), variables={"name": "x", "ports": [1, 2]})
    cached = Templar(loader=DataLoader(), variables={"name": "x", "ports": [1, 2]})
    render._cache_compiled(cached)
    for _ in range(2):
        assert cached.template(TEMPLATE, escape_backslashes=False, overrides=OVERRIDES) == \
            plain.template(TEMPLATE, escape_backslashes=False, overrides=OVERRIDES)


def test_an_untrusted_string_is_still_not_templated():
    templar = Templar(loader=DataLoader(), variables={"secret": "s3cret"})
    render._cache_compiled(templar)
    assert templar.template(trust_as_template("{{ secret }}")) == "s3cret"
    assert templar.template("{{ secret }}") == "{{ secret }}"  # not trusted: the trust check runs before the cache
