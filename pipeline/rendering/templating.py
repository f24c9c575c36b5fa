"""The HTML, CSS and JS of the run report and of pipeline.serve's page, kept as files beside the code.

Each package ships a templates/ folder (package data, read with importlib.resources, so it works from
the source tree and from an installed wheel alike). A page is a string.Template whose $names are
filled by `fill`: plain values are HTML-escaped there, and only markup the code built (and escaped)
itself goes in unescaped, named as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from importlib.resources import files
from string import Template

TEMPLATES = "templates"  # the folder, in each package that has pages


def read_template(package: str, name: str) -> str:
    """The text of `name` in `package`'s templates folder, as UTF-8 whatever the platform's default."""
    return files(package).joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def page_template(package: str, name: str) -> Template:
    return Template(read_template(package, name))


BASE_STYLE = read_template("pipeline.rendering", "base.css")  # the look the report and the serve page share


def fill(template: Template, markup: Mapping[str, str], **text: object) -> str:
    """The page, with every `text` value escaped for HTML (quotes too: some sit in attributes) and every
    `markup` value as it is. A $name left unfilled, filled twice or filled but not in the template is
    an error, so a renamed placeholder cannot leave a blank or a stray "$name" on the page."""
    given = [*markup, *text]
    wanted = template.get_identifiers()
    if sorted(given) != sorted(wanted):
        raise ValueError(f"template wants {sorted(wanted)}, given {sorted(given)}")
    return template.substitute({**markup, **{key: escape(str(value)) for key, value in text.items()}})
