#!/usr/bin/env python3
"""One page of the C++ API reference per public header: docs/api/cpp/<component>-<name>.md.

  api_pages.py --write   writes a page for every public header that has none, removes stale pages
  api_pages.py --check   fails naming the headers without a page and the pages without a header

The headers are those Doxygen reads (docs/Doxyfile's INPUT): the core's include/memcnn/ and the
components' <component>/include/memcnn/<component>/. A new header therefore fails the docs build
until its page exists, the same as an undocumented symbol does.
"""
import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "api" / "cpp"
COMPONENTS = ["models", "data", "distributed", "train"]


def public_headers():
    """Yields (page stem, include path as users write it) for every public header."""
    for header in sorted((ROOT / "include" / "memcnn").glob("*.h")):
        yield f"core-{header.stem}", f"memcnn/{header.name}"
    for component in COMPONENTS:
        for header in sorted((ROOT / component / "include" / "memcnn" / component).glob("*.h")):
            yield f"{component}-{header.stem}", f"memcnn/{component}/{header.name}"


def page_text(include):
    return (f"# `{include}`\n\n"
            f"```cpp\n#include <{include}>\n```\n\n"
            f"```{{doxygenfile}} {include}\n:project: memcnn\n```\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args()

    expected = dict(public_headers())
    existing = {page.stem for page in PAGES.glob("*.md")}
    missing = sorted(set(expected) - existing)
    stale = sorted(existing - set(expected))
    if args.write:
        PAGES.mkdir(parents=True, exist_ok=True)
        for stem in missing:
            (PAGES / f"{stem}.md").write_text(page_text(expected[stem]), encoding="utf-8")
        for stem in stale:
            (PAGES / f"{stem}.md").unlink()
        print(f"api_pages: {len(expected)} headers, wrote {len(missing)} pages, removed {len(stale)}")
        return 0
    problems = [f"public header {expected[s]} has no page docs/api/cpp/{s}.md" for s in missing]
    problems += [f"docs/api/cpp/{s}.md documents no public header (the header was removed or renamed)"
                 for s in stale]
    for problem in problems:
        print(f"api_pages: {problem}", file=sys.stderr)
    if problems:
        print("api_pages: fix with: python3 docs/tools/api_pages.py --write", file=sys.stderr)
        return 1
    print(f"api_pages: {len(expected)} public headers, each with its page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
