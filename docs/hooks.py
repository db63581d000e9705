"""MkDocs hook: the command-line reference page, rendered from the live Typer app at build time.

The page is never written by hand or kept in the repository, so it cannot drift from the
commands: every command, argument and option below comes from ``fmnist.cli.app`` itself
(importing it loads neither JAX nor Keras, so the build stays fast).
"""

from __future__ import annotations

import re

PAGE = "cli.md"  # the generated page's path inside docs/, as mkdocs.yml's nav names it

INTRO = """# Command line

Every `fmnist` command with its arguments and options, generated from the command line's own
definitions when this site is built (the same text as `fmnist COMMAND --help`). An option's
default is shown in brackets. Errors a user can act on print one line and exit with code 2.
"""


def on_files(files, config):
    """Add the generated page to the site's files before the navigation is built."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render_cli()))
    return files


def render_cli() -> str:
    """The Markdown of the whole reference: an index of the commands, then one section each."""
    import typer.main

    from fmnist.cli import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="fmnist")
    lines = [INTRO, "| Command | What it does |", "| --- | --- |"]
    for name, cmd in _commands(root, ctx):
        lines.append(f"| [`fmnist {name}`](#{_anchor(name)}) | {_escape(_first_line(cmd))} |")
    lines.append("")
    for name, cmd in _commands(root, ctx):
        lines += _section(name, cmd, ctx)
    return "\n".join(lines) + "\n"


def _commands(group, ctx, prefix: str = ""):
    """(full name, command) for every visible command, depth first, in the app's own order."""
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        yield prefix + name, cmd
        if hasattr(cmd, "list_commands"):
            yield from _commands(cmd, cmd.context_class(cmd, info_name=name, parent=ctx), f"{prefix}{name} ")


def _section(name: str, cmd, parent_ctx) -> list[str]:
    ctx = cmd.context_class(cmd, info_name=name.split()[-1], parent=parent_ctx)
    usage = " ".join(["fmnist", name, *cmd.collect_usage_pieces(ctx)])
    lines = [f"## fmnist {name} {{#{_anchor(name)}}}", "", "```text", usage, "```", ""]
    for paragraph in (cmd.help or "").split("\n\n"):
        text = " ".join(line.strip() for line in paragraph.splitlines() if line.strip() != "\b")
        if text:
            lines += [_escape(text), ""]
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        records = [r for p in params if p.param_type_name == kind and (r := p.get_help_record(ctx))]
        if records:
            lines += [f"**{title}**", ""]
            lines += [f"- `{flags}`{' — ' + _escape(help_) if help_ else ''}" for flags, help_ in records]
            lines.append("")
    return lines


def _first_line(cmd) -> str:
    return (cmd.short_help or cmd.help or "").strip().split("\n\n")[0].replace("\n", " ")


def _anchor(name: str) -> str:
    return "fmnist-" + name.replace(" ", "-")


_CODE = re.compile(r"(`[^`]*`)")


def _escape(text: str) -> str:
    """Help text as literal Markdown: code spans kept, everything else escaped (``*``, ``<``, ``|``...)."""
    parts = _CODE.split(text)
    return "".join(part if i % 2 else _escape_plain(part) for i, part in enumerate(parts))


def _escape_plain(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\*_\[\]|#])", r"\\\1", text)
