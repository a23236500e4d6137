"""Names that say one thing: no two classes of twisted_keyx share a name
(issue 20, "names unique"), so that a traceback, a log line or an import
names one class."""

import ast
import collections
import os

from twisted.trial import unittest

import twisted_keyx

PACKAGE = os.path.dirname(os.path.abspath(twisted_keyx.__file__))


def module_classes(root=PACKAGE):
    """``{class name: [module path, ...]}`` for the classes defined at the
    top level of each module under ``root``."""
    found = collections.defaultdict(list)
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    found[node.name].append(os.path.relpath(path, root))
    return found


class UniqueNamesTests(unittest.TestCase):
    def test_no_two_classes_share_a_name(self):
        classes = module_classes()
        self.assertGreater(len(classes), 100)  # the walk found the package
        twice = {name: paths for name, paths in classes.items() if len(paths) > 1}
        self.assertEqual(twice, {})

    def test_a_shared_name_is_found(self):
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "a"))
        for path in ("one.py", os.path.join("a", "two.py")):
            with open(os.path.join(folder, path), "w") as f:
                f.write("class ClientMessage:\n    class Inner:\n        pass\n")
        classes = module_classes(folder)
        self.assertEqual(sorted(classes["ClientMessage"]), [os.path.join("a", "two.py"), "one.py"])
        self.assertNotIn("Inner", classes)  # only a module's own classes
