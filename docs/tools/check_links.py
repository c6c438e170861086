#!/usr/bin/env python3
"""Checks every link inside the built site: check_links.py HTML_DIR

For each page, every href and src that points inside the site must name an existing file and,
with a #fragment, an element of that page with that id (or an <a name>). Links to other sites
are counted, not fetched (the build is offline). Exits 1 naming each broken link and its page.
"""
import html.parser
import pathlib
import sys
import urllib.parse


class PageParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []
        self.anchors = set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("id",):
            if attributes.get(name):
                self.anchors.add(attributes[name])
        if tag == "a" and attributes.get("name"):
            self.anchors.add(attributes["name"])
        for name in ("href", "src"):
            if attributes.get(name) is not None and tag in ("a", "link", "img", "script", "iframe", "source"):
                self.links.append(attributes[name])


def parse(path, cache):
    if path not in cache:
        parser = PageParser()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = parser
    return cache[path]


def main():
    site = pathlib.Path(sys.argv[1]).resolve()
    pages = sorted(site.rglob("*.html"))
    if not pages:
        print(f"check_links: no HTML pages in {site}: build the site first (scripts/docs.sh)", file=sys.stderr)
        return 1
    cache, broken, internal, external = {}, [], 0, 0
    for page in pages:
        for link in parse(page, cache).links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or link.startswith("//"):
                external += parts.scheme in ("http", "https")
                if parts.scheme not in ("http", "https", "mailto", "data", "javascript"):
                    broken.append((page, link, f"unexpected scheme {parts.scheme}"))
                continue
            internal += 1
            target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if site not in target.parents and target != site:
                broken.append((page, link, "points outside the site"))
            elif not target.is_file():
                broken.append((page, link, "no such file"))
            elif parts.fragment and target.suffix == ".html" and \
                    urllib.parse.unquote(parts.fragment) not in parse(target, cache).anchors:
                broken.append((page, link, f"no element with id {parts.fragment!r} in {target.relative_to(site)}"))
    for page, link, why in broken:
        print(f"check_links: {page.relative_to(site)}: {link}: {why}", file=sys.stderr)
    print(f"check_links: {len(pages)} pages, {internal} links inside the site, {len(broken)} broken; "
          f"{external} links to other sites (not fetched: offline)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
