#!/usr/bin/env python3
"""Counts the public C++ symbols and how many of them are documented.

  api_coverage.py SOURCE_ROOT WORK_DIR

Runs Doxygen over the public headers with EXTRACT_ALL (so undocumented symbols are listed too)
into WORK_DIR and counts, by unique Doxygen id: public classes and structs, and their public
members (not deleted copies or defaulted destructors), namespace-level functions, variables,
types and enumerators. A symbol is documented when
its brief or detailed description has text. Prints the totals per header folder and exits 0; the
docs build fails on undocumented symbols through Doxygen's own warnings (scripts/docs.sh).
"""
import collections
import os
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET


def has_text(element):
    return element is not None and "".join(element.itertext()).strip() != ""


def documented(element):
    return has_text(element.find("briefdescription")) or has_text(element.find("detaileddescription"))


def component_of(location):
    path = location.get("file", "") if location is not None else ""
    parts = pathlib.PurePath(path).parts
    if "memcnn" in parts:
        tail = parts[parts.index("memcnn") + 1:]
        return "memcnn/" + (tail[0] + "/" if len(tail) > 1 else "")
    return path


def main():
    root, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    config = (root / "docs" / "Doxyfile").read_text(encoding="utf-8")
    config += f"\nEXTRACT_ALL = YES\nWARN_IF_UNDOCUMENTED = NO\nWARN_LOGFILE = {work / 'warnings.log'}\n"
    environment = dict(os.environ, MEMCNN_SOURCE=str(root), MEMCNN_DOXYGEN_OUT=str(work),
                       MEMCNN_DOXYGEN_WARN=str(work / "warnings.log"))
    subprocess.run(["doxygen", "-"], input=config.encode(), env=environment, check=True)

    symbols = {}  # id -> (component, documented, name)
    xml = work / "xml"
    for path in sorted(xml.glob("*.xml")):
        if path.name in ("index.xml", "Doxyfile.xml"):
            continue
        compound = ET.parse(path).getroot().find("compounddef")
        if compound is None or compound.get("kind") in ("file", "dir", "page"):
            continue
        if compound.get("prot", "public") != "public":
            continue
        if not (compound.findtext("compoundname") or "").startswith("memcnn"):
            continue  # LibTorch's namespaces, reopened for a forward declaration, are not our API
        kind = compound.get("kind")
        if kind in ("class", "struct", "union", "namespace"):
            symbols[compound.get("id")] = (component_of(compound.find("location")), documented(compound),
                                           compound.findtext("compoundname"))
        for member in compound.iter("memberdef"):
            if member.get("prot") != "public":
                continue
            if re.search(r"=\s*(delete|default)\s*$", member.findtext("argsstring") or ""):
                continue  # deleted copies and defaulted destructors: nothing to document
            name = (compound.findtext("compoundname") or "") + "::" + (member.findtext("name") or "")
            symbols[member.get("id")] = (component_of(member.find("location")), documented(member), name)
            for value in member.findall("enumvalue"):
                symbols[value.get("id")] = (component_of(member.find("location")), documented(value),
                                            name + "::" + (value.findtext("name") or ""))

    totals = collections.Counter()
    done = collections.Counter()
    for component, is_documented, _ in symbols.values():
        totals[component] += 1
        done[component] += is_documented
    for component in sorted(totals):
        print(f"api coverage: {component:22s} {done[component]:4d} of {totals[component]:4d} public symbols documented")
    print(f"api coverage: all                    {sum(done.values()):4d} of {sum(totals.values()):4d} public symbols documented")
    missing = sorted(name for _, is_documented, name in symbols.values() if not is_documented)
    (work / "undocumented.txt").write_text("\n".join(missing) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
