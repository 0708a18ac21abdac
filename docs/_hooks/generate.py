"""MkDocs hooks: the parts of the docs generated at build time, so they cannot drift.

- the settings table (``pdftasks.settings.table``), the CLI reference (the click commands)
  and the HTTP API reference (the OpenAPI schema of ``pdftasks.api:app``), put where a page
  has the matching marker;
- pictures: thumbnails of the sample PDFs rendered from the real templates and their sample
  data, the Grafana dashboard drawn from its JSON, the benchmark charts
  (``benchmarks/charts.py``);
- the changelog and the security policy, from the repository's files.

Nothing is written into docs/: generated files exist only in the built site.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.pdftasks")

#: Pages copied from the repository's root: (source, page).
COPIED = (("CHANGELOG.md", "changelog.md"), ("SECURITY.md", "security.md"))
#: The samples shown as thumbnails: (template, sample data, picture).
SAMPLES = (("invoice.html", "sample_invoice.json", "img/sample-invoice.png"),
           ("report.html", "sample_report.json", "img/sample-report.png"))

CLI_MARKER = "<!-- generated: cli-reference -->"
OPENAPI_MARKER = "<!-- generated: openapi-reference -->"


def on_files(files: Files, config: Any) -> Files:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for source, page in COPIED:
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=_relink(text)))
    for name, png in _pictures().items():
        files.append(File.generated(config, name, content=png))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    from pdftasks.settings.table import TABLE_END, TABLE_START, readme_with_table

    if TABLE_START in markdown and TABLE_END in markdown:
        markdown = readme_with_table(markdown)
    if CLI_MARKER in markdown:
        from pdftasks.cli.reference import cli_reference

        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if OPENAPI_MARKER in markdown:
        markdown = markdown.replace(OPENAPI_MARKER, openapi_reference())
    return markdown


def _relink(text: str) -> str:
    """Root files' links into the docs, written for GitHub, as links between pages."""
    return text.replace("](docs/", "](").replace("](README.md)", "](index.md)")


# The HTTP API from its OpenAPI schema.


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{name.lower()})"
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    return f"`{schema.get('type', 'object')}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def openapi_reference() -> str:
    """Markdown of every route and schema of ``pdftasks.api:app``'s OpenAPI document."""
    from pdftasks.api import app

    spec = app.openapi()
    out = [f"OpenAPI {spec['openapi']}, *{spec['info']['title']}* "
           f"version {spec['info']['version']}. The same document is served by a running "
           "API at `/openapi.json`.", ""]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            out += [f"### `{method.upper()} {path}`", ""]
            if op.get("summary"):
                out += [f"**{_cell(op['summary'])}**", ""]
            if op.get("description"):
                out += [_cell(op["description"]), ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | required | meaning |", "|---|---|---|---|---|"]
                out += [f"| `{p['name']}` | {p['in']} | {_schema_name(p.get('schema', {}))} | "
                        f"{'yes' if p.get('required') else 'no'} | "
                        f"{_cell(p.get('description', ''))} |" for p in params]
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                out += [f"Request body ({media}): {_schema_name(content.get('schema', {}))}", ""]
            responses = op.get("responses", {})
            if responses:
                out += ["| status | meaning | body |", "|---|---|---|"]
                for status, response in responses.items():
                    schema = next(iter(response.get("content", {}).values()), {}).get("schema")
                    out.append(f"| {status} | {_cell(response.get('description', ''))} | "
                               f"{_schema_name(schema) if schema else ''} |")
                out.append("")
    out += ["## Schemas", ""]
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        out += [f"### {name}", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            out += ["| field | type | required | meaning |", "|---|---|---|---|"]
            out += [f"| `{field}` | {_schema_name(p)} | {'yes' if field in required else 'no'} | "
                    f"{_cell(p.get('description', ''))} |" for field, p in properties.items()]
            out.append("")
    return "\n".join(out)


# Pictures.


def _pictures() -> dict[str, bytes]:
    pictures = dict(_sample_thumbnails())
    pictures["img/grafana-dashboard.png"] = grafana_picture(
        ROOT / "deploy" / "grafana" / "dashboards" / "pdftasks.json")
    spec = importlib.util.spec_from_file_location("pdftasks_bench_charts",
                                                  ROOT / "benchmarks" / "charts.py")
    assert spec is not None and spec.loader is not None
    charts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(charts)
    pictures.update({f"img/{name}": png for name, png in charts.charts().items()})
    return pictures


def _sample_thumbnails() -> dict[str, bytes]:
    """Page 1 of each sample PDF, rendered by pdftasks from templates/ and its sample data."""
    import pypdfium2

    from pdftasks.render import PDFService, PDFServiceConfig

    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="pdftasks-docs-") as tmp:
        service = PDFService(PDFServiceConfig(templates_dir=ROOT / "templates", output_dir=tmp))
        for template, data_file, picture in SAMPLES:
            data = json.loads((ROOT / "templates" / data_file).read_text(encoding="utf-8"))
            result = service.generate_pdf(template, data, Path(picture).stem + ".pdf")
            document = pypdfium2.PdfDocument(result.path)
            try:
                image = document[0].render(scale=64 / 72).to_pil()
            finally:
                document.close()
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            out[picture] = buffer.getvalue()
            log.info("rendered %s from templates/%s", picture, template)
    return out


def grafana_picture(dashboard_file: Path) -> bytes:
    """The dashboard's panels at their grid positions, with their titles and queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    dashboard = json.loads(dashboard_file.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if "gridPos" in p]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(12, 12 * rows / 24 * 0.55), facecolor="#111217")
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, 24)
    axes.set_ylim(rows, -1.2)
    axes.axis("off")
    axes.text(0.1, -0.6, f"Grafana: {dashboard.get('title', 'pdftasks')}", color="white",
              fontsize=13, weight="bold", va="center")
    for panel in panels:
        g = panel["gridPos"]
        box = FancyBboxPatch((g["x"] + 0.1, g["y"] + 0.1), g["w"] - 0.2, g["h"] - 0.2,
                             boxstyle="round,pad=0,rounding_size=0.15",
                             facecolor="#181b1f", edgecolor="#2c3235")
        axes.add_patch(box)
        axes.text(g["x"] + 0.35, g["y"] + 0.6, panel.get("title", ""), color="#d8d9da",
                  fontsize=9, weight="bold", va="center")
        axes.text(g["x"] + g["w"] - 0.35, g["y"] + 0.6, panel.get("type", ""),
                  color="#6e7380", fontsize=7, va="center", ha="right")
        queries = [t.get("expr", "") for t in panel.get("targets", [])]
        width = int(g["w"] * 6.2)
        for i, query in enumerate(queries[:3]):
            text = query if len(query) <= width else query[:width - 1] + "…"
            axes.text(g["x"] + 0.35, g["y"] + 1.4 + i * 0.65, text, color="#73bf69",
                      fontsize=6.5, family="monospace", va="center")
        if panel.get("type") == "timeseries" and g["h"] >= 6:
            x0, x1 = g["x"] + 0.6, g["x"] + g["w"] - 0.4
            y0 = g["y"] + g["h"] - 0.6
            axes.plot([x0, x1], [y0, y0], color="#2c3235", linewidth=0.8)
            axes.plot([x0, x0], [y0, g["y"] + 1.4 + len(queries[:3]) * 0.65], color="#2c3235",
                      linewidth=0.8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor=figure.get_facecolor(),
                   metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
