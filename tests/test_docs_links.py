"""Every relative link in README.md and docs/**/*.md resolves.

A link names a file or folder that exists (relative to the page), and its
`#anchor`, if any, is one GitHub makes of a heading of the page it points to.
Web links (`http:`, `https:`, `mailto:`) are not followed.
"""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# [text](target) and ![alt](target), the target up to a space (a title) or `)`.
_INLINE = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
# [label]: target, reference-style definitions.
_DEFINITION = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$')
_HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
_HTML_ANCHOR = re.compile(r'<a\s[^>]*(?:name|id)="([^"]+)"')


def _pages():
  pages = [os.path.join(REPO, 'README.md')]
  for root, _, files in os.walk(os.path.join(REPO, 'docs')):
    pages += [os.path.join(root, f) for f in sorted(files) if f.endswith('.md')]
  return sorted(pages)


def _prose(text):
  """The lines of a page, those of fenced code blocks blanked."""
  lines, fence = [], None
  for line in text.splitlines():
    marker = re.match(r'\s{0,3}(`{3,}|~{3,})', line)
    if marker and (fence is None or marker.group(1)[0] == fence[0]
                   and len(marker.group(1)) >= len(fence)):
      fence = None if fence else marker.group(1)
      lines.append('')
      continue
    lines.append('' if fence else line)
  return lines


def slug(heading):
  """GitHub's anchor of a heading: its text lowercased, punctuation dropped, spaces '-'."""
  text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link reads as its text
  text = re.sub(r'<[^>]+>', '', text)  # so does inline HTML
  return re.sub(r'[^\w\- ]', '', text.strip().lower()).replace(' ', '-')


def anchors(text):
  """Every anchor a page has: its headings' slugs (repeats get -1, -2, ...) and HTML ids."""
  found, seen = set(), {}
  for line in _prose(text):
    heading = _HEADING.match(line)
    if heading:
      base = slug(heading.group(2))
      n = seen.get(base, 0)
      seen[base] = n + 1
      found.add(base if n == 0 else f'{base}-{n}')
  found.update(_HTML_ANCHOR.findall(text))
  return found


def links(text):
  """[(line number, target)] of every link on a page outside code."""
  out = []
  for number, line in enumerate(_prose(text), 1):
    line = re.sub(r'(`+)(?!`).*?(?<!`)\1(?!`)', '``', line)  # inline code
    out += [(number, t) for t in _INLINE.findall(line)]
    definition = _DEFINITION.match(line)
    if definition:
      out.append((number, definition.group(1)))
  return out


def broken(page):
  """Each relative link of `page` that does not resolve, as 'line N: target (why)'."""
  with open(page) as f:
    text = f.read()
  problems = []
  for number, target in links(text):
    if re.match(r'[a-z][a-z0-9+.-]*:', target, re.I):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    if not os.path.exists(resolved):
      problems.append(f'line {number}: {target} (no such file)')
    elif anchor and resolved.endswith('.md'):
      with open(resolved) as f:
        if anchor not in anchors(f.read()):
          problems.append(f'line {number}: {target} (no heading makes #{anchor})')
  return problems


@pytest.mark.parametrize('page', [os.path.relpath(p, REPO) for p in _pages()])
def test_every_relative_link_resolves(page):
  assert broken(os.path.join(REPO, page)) == []


def test_slugs_follow_github():
  assert slug('The selection step at pool scale (`selection_*`)') == (
      'the-selection-step-at-pool-scale-selection_')
  assert slug('Flags & strategies: `--al_unit`') == 'flags--strategies---al_unit'
  assert slug('See [the docs](docs/x.md) now') == 'see-the-docs-now'
  assert anchors('# A\n## A\n```\n# not a heading\n```\n<a id="x"></a>\n') == {'a', 'a-1', 'x'}


def test_the_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
  (tmp_path / 'other.md').write_text('# Real heading\n')
  page = tmp_path / 'page.md'
  page.write_text('[ok](other.md#real-heading) [web](https://example.com/x)\n'
                  '[gone](nowhere.md) ![img](other.md) [bad](other.md#fake)\n'
                  '`[in code](nowhere.md)`\n\n[self](#top)\n# Top\n[def]: missing/\n')
  assert broken(str(page)) == ['line 2: nowhere.md (no such file)',
                               'line 2: other.md#fake (no heading makes #fake)',
                               'line 7: missing/ (no such file)']
