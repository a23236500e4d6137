"""The docs stay true to the code: each command's reference page
(docs/reference/) describes exactly the options the command has, and
README's two commands are the ones .ci/run runs.  (That the man pages in
docs/man/ are those the pages build, .ci/run checks with Sphinx.)"""

import os
import re

from twisted.trial import unittest

from twisted_keyx.cli import admin, client, lab
from twisted_keyx.service import tap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
REFERENCE = os.path.join(DOCS, "reference")


def documented_options(path):
    """``{program: {option string}}`` from the ``.. program::`` and
    ``.. option::`` directives of a reST page: ``.. option:: -o FILE,
    --output FILE`` documents ``-o`` and ``--output``."""
    programs = {}
    program = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"\.\. program:: (.+?)\s*$", line)
            if match:
                program = match.group(1)
                programs.setdefault(program, set())
                continue
            match = re.match(r"\.\. option:: (.+?)\s*$", line)
            if match:
                if program is None:
                    raise ValueError(f"{path}: an option before any program: {line!r}")
                for spec in match.group(1).split(", "):
                    programs[program].add(spec.split()[0])
    return programs


def argparse_options(parser):
    """``{program: {option string}}`` of an argparse parser and its
    subcommands, without ``-h``/``--help`` (every command has them)."""
    import argparse

    found = {}

    def visit(parser):
        options = set()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    visit(sub)
                continue
            options.update(action.option_strings)
        if options or parser.prog not in found:
            found[parser.prog] = options

    visit(parser)
    return {prog: options for prog, options in found.items() if options}


def twistd_options(options):
    """``{"twistd keyx": {option string}}`` of a ``usage.Options``."""
    names = {"--" + name.rstrip("=") for name in options.longOpt}
    names.update("-" + letter for letter in options.shortOpt.replace(":", ""))
    return {"twistd keyx": names}


def differences(documented, code):
    """Lines naming each option the code has and the page does not describe,
    and each the page describes that the code does not have."""
    problems = []
    for program in sorted(set(documented) | set(code)):
        have = code.get(program, set())
        said = documented.get(program, set())
        for option in sorted(have - said):
            problems.append(f"{program} {option}: not in the reference page")
        for option in sorted(said - have):
            problems.append(f"{program} {option}: documented, but the command has no such option")
    return problems


class OptionReferenceTests(unittest.TestCase):
    """Each reference page describes each option of its command, and no other."""

    def check(self, page, code):
        problems = differences(documented_options(os.path.join(REFERENCE, page)), code)
        self.assertEqual(problems, [], f"docs/reference/{page} and the code differ")

    def test_client(self):
        self.check("keyx-client.rst", argparse_options(client.build_parser()))

    def test_admin(self):
        self.check("keyx-admin.rst", argparse_options(admin.build_parser()))

    def test_lab(self):
        self.check("keyx-lab.rst", argparse_options(lab.build_parser()))

    def test_twistd_keyx(self):
        self.check("twistd-keyx.rst", twistd_options(tap.Options()))

    def test_every_command_has_options(self):
        """The comparison sees the subcommands: a parser read wrongly would
        compare two empty sets."""
        programs = argparse_options(client.build_parser())
        self.assertLessEqual({"keyx-client", "keyx-client dh", "keyx-client eke",
                              "keyx-client opaque"}, set(programs))
        self.assertIn("--known-hosts", programs["keyx-client dh"])
        self.assertIn("--dh", twistd_options(tap.Options())["twistd keyx"])

    def test_an_undocumented_option_is_found(self):
        """An option added to a command without a word in its page is reported."""
        parser = lab.build_parser()
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                action.choices["crack"].add_argument("--new-option")
        page = documented_options(os.path.join(REFERENCE, "keyx-lab.rst"))
        self.assertEqual(differences(page, argparse_options(parser)),
                         ["keyx-lab crack --new-option: not in the reference page"])

    def test_a_stale_option_is_found(self):
        """An option a page still describes after the command lost it is reported."""
        options = tap.Options()
        options.longOpt = [name for name in options.longOpt if name != "workers="]
        page = documented_options(os.path.join(REFERENCE, "twistd-keyx.rst"))
        self.assertEqual(differences(page, twistd_options(options)),
                         ["twistd keyx --workers: documented, but the command has no such option"])

    def test_aliases(self):
        """``-o FILE, --output FILE`` documents both spellings."""
        page = documented_options(os.path.join(REFERENCE, "keyx-admin.rst"))
        self.assertEqual(page["keyx-admin hostkey"], {"-o", "--output", "--force"})


class ReadmeTests(unittest.TestCase):
    """README's two commands are exactly those the docs and .ci/run use."""

    INSTALL_AND_RUN = ("python3 -m venv .venv && . .venv/bin/activate && "
                       "pip install . && twistd -n keyx")
    TEST = ("python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' "
            "&& python -W error -m twisted.trial tests && lint-imports && mypy twisted_keyx")

    def read(self, *path):
        with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
            return f.read()

    def test_readme_commands(self):
        commands = [line.strip() for line in self.read("README.rst").splitlines()
                    if line.startswith("    python3 -m venv")]
        self.assertEqual(commands, [self.INSTALL_AND_RUN, self.TEST])

    def test_ci_runs_the_test_command(self):
        """.ci/run runs the test command's steps, in order, in its own virtualenv."""
        script = self.read(".ci", "run")
        steps = self.TEST.split(" && ")[2:]
        positions = [script.find("\n" + step + "\n") for step in steps]
        self.assertNotIn(-1, positions, f"{steps} not all lines of .ci/run")
        self.assertEqual(positions, sorted(positions))

    def test_docs_repeat_the_commands(self):
        self.assertIn(self.INSTALL_AND_RUN, self.read("docs", "tutorial", "first-handshake.rst"))
        self.assertIn(self.TEST, self.read("docs", "howto", "testing.rst"))


class LayoutTests(unittest.TestCase):
    """docs/reference/layout.rst names every package of twisted_keyx and
    the layers in setup.cfg's order."""

    def test_every_package_described(self):
        import twisted_keyx

        with open(os.path.join(REFERENCE, "layout.rst"), encoding="utf-8") as f:
            page = f.read()
        root = os.path.dirname(twisted_keyx.__file__)
        packages = sorted(name for name in os.listdir(root)
                          if os.path.exists(os.path.join(root, name, "__init__.py")))
        self.assertIn("core", packages)
        missing = [name for name in packages if f"``twisted_keyx/{name}/``" not in page]
        self.assertEqual(missing, [])

    def test_layers_line(self):
        """The page's one-line picture of the layers is setup.cfg's contract."""
        import configparser

        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        lines = config["importlinter:contract:layers"]["layers"].split("\n")
        picture = " > ".join(
            " | ".join(name.strip().rsplit(".", 1)[-1] for name in line.split("|"))
            for line in lines if line.strip())
        with open(os.path.join(REFERENCE, "layout.rst"), encoding="utf-8") as f:
            self.assertIn("    " + picture + "\n", f.read())
