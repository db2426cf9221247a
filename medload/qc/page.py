"""The QC page's HTML: escaping, histograms as inline SVG, tables, style, script and the page frame.

Pure text functions over numbers and strings already de-identified by the caller
(:mod:`medload.qc.report` decides what is shown); nothing here reads a store.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["escape", "number", "histogram_svg", "counter_table", "controls", "notes", "page", "STYLE", "SCRIPT"]


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML and quoted attributes.

    >>> escape("<b>'x'</b>")
    '&lt;b&gt;&#x27;x&#x27;&lt;/b&gt;'
    """
    return html.escape(str(value), quote=True)


def number(value: float) -> str:
    """A value shown with four significant digits (``nan`` for a non-finite one).

    >>> number(1234.5678), number(float("inf"))
    ('1235', 'nan')
    """
    return "nan" if not math.isfinite(value) else f"{value:.4g}"


def histogram_svg(values: Iterable[float], title: str, *, bins: int = 30, width: int = 380, height: int = 110) -> str:
    """An inline SVG bar chart of ``values`` (no script, no external file).

    Examples
    --------
    >>> svg = histogram_svg([1.0, 1.0, 2.0], "spacing (mm)", bins=2)
    >>> svg.startswith("<svg") and svg.count("<rect") == 2
    True
    """
    data = np.asarray(list(values), np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return f"<div class='hist'><b>{escape(title)}</b><br>no values</div>"
    lo, hi = float(data.min()), float(data.max())
    if hi - lo < 1e-9 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(data, bins=bins, range=(lo, hi))
    plot_h = height - 34
    bar_w = (width - 10) / bins
    top = max(int(counts.max()), 1)
    bars = "".join(
        f"<rect x='{5 + i * bar_w:.1f}' y='{16 + plot_h - c / top * plot_h:.1f}' width='{max(bar_w - 1, 1):.1f}' "
        f"height='{c / top * plot_h:.1f}'><title>{number(edges[i])} to {number(edges[i + 1])}: {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    return (
        f"<svg class='hist' width='{width}' height='{height}' role='img' aria-label='{escape(title)}'>"
        f"<text x='5' y='11'>{escape(title)} (n={data.size})</text>{bars}"
        f"<text x='5' y='{height - 4}'>{number(lo)}</text>"
        f"<text x='{width - 5}' y='{height - 4}' text-anchor='end'>{number(hi)}</text></svg>"
    )


def counter_table(counter: Counter[str], head: str) -> str:
    """A two-column table (``head``, volumes) of ``counter``, most common first."""
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in counter.most_common())
    return f"<table class='small'><tr><th>{escape(head)}</th><th>volumes</th></tr>{rows}</table>"


STYLE = """
body{font:13px system-ui,sans-serif;margin:0 16px 40px;background:#f6f6f6;color:#222}
h1{font-size:20px;margin:14px 0 4px} h2{font-size:16px;margin:22px 0 6px} h3{font-size:13px;margin:0 0 4px}
code{font-size:11px} table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.summary{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.hist{background:#fff;border:1px solid #ccc} .hist rect{fill:#4a78b5} .hist text{font-size:10px}
.controls{position:sticky;top:0;background:#f6f6f6;padding:8px 0;border-bottom:1px solid #ccc;z-index:2}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ccc;border-radius:4px;padding:8px;width:CARDWIDTHpx}
.card.bad{border-color:#c33;box-shadow:0 0 0 1px #c33}
.views{display:flex;gap:6px;align-items:flex-end;background:#000;padding:4px;margin-bottom:4px}
.view{margin:0;text-align:center;color:#ddd;font-size:10px}
.frame{display:grid;grid-template-columns:12px auto 12px;grid-template-rows:12px auto 12px;align-items:center;justify-items:center}
.frame img{grid-column:2;grid-row:2;height:auto;display:block}
.lt{color:#ff5;font-weight:bold;font-size:11px}
.lt.top{grid-column:2;grid-row:1} .lt.bottom{grid-column:2;grid-row:3} .lt.left{grid-column:1;grid-row:2} .lt.right{grid-column:3;grid-row:2}
.problems{color:#b00;margin:4px 0;padding-left:18px} .reason{max-width:760px;white-space:pre-wrap}
.swatch{display:inline-block;width:10px;height:10px;margin:0 3px 0 6px;border:1px solid #333}
img.broken{outline:3px solid #f0f} .hidden{display:none!important}
"""

SCRIPT = """
(function(){
  var imgs=[].slice.call(document.querySelectorAll('.card img'));
  var state=document.getElementById('thumb-state');
  function count(){
    var loaded=0,broken=0;
    imgs.forEach(function(i){ if(i.dataset.state==='loaded')loaded++; else if(i.dataset.state==='broken')broken++; });
    state.dataset.loaded=loaded; state.dataset.broken=broken; state.dataset.total=imgs.length;
    state.textContent=loaded+' of '+imgs.length+' thumbnails drawn'+(broken?', '+broken+' MISSING (outlined)':'');
  }
  function mark(i){ i.dataset.state=(i.complete&&i.naturalWidth>0)?'loaded':'broken'; if(i.dataset.state==='broken')i.classList.add('broken'); count(); }
  // The address's '#' part: 'all' loads every thumbnail at once (printing, a check of the whole
  // page); 'modality=MR', 'problems', 'nofailed', 'sort=problems' set the filters (a link to a view).
  var opts={}; location.hash.replace(/^#/,'').split('&').forEach(function(p){ if(p){ var kv=p.split('='); opts[decodeURIComponent(kv[0])]=kv.length>1?decodeURIComponent(kv[1]):true; } });
  if(opts.all) imgs.forEach(function(i){ i.loading='eager'; });
  imgs.forEach(function(i){
    if(i.complete&&i.naturalWidth>0){ i.dataset.state='loaded'; }
    else { i.addEventListener('load',function(){mark(i);}); i.addEventListener('error',function(){mark(i);}); }
  });
  count();
  var cards=document.getElementById('cards'), failed=document.getElementById('failed-section');
  function apply(){
    var mod=document.getElementById('f-modality').value, onlyBad=document.getElementById('f-problems').checked,
        showFailed=document.getElementById('f-failed').checked, key=document.getElementById('f-sort').value, shown=0;
    var list=[].slice.call(cards.children);
    list.forEach(function(c){ var ok=(!mod||c.dataset.modality===mod)&&(!onlyBad||+c.dataset.problems>0);
      c.classList.toggle('hidden',!ok); if(ok)shown++; });
    [].slice.call(document.querySelectorAll('tr.failed')).forEach(function(r){
      r.classList.toggle('hidden',!!mod&&r.dataset.modality!==mod); });
    failed.classList.toggle('hidden',!showFailed);
    list.sort(function(a,b){
      if(key==='problems') return (+b.dataset.problems)-(+a.dataset.problems)||(+a.dataset.order)-(+b.dataset.order);
      if(key==='slices') return (+b.dataset.slices)-(+a.dataset.slices)||(+a.dataset.order)-(+b.dataset.order);
      if(key==='modality') return a.dataset.modality.localeCompare(b.dataset.modality)||(+a.dataset.order)-(+b.dataset.order);
      return (+a.dataset.order)-(+b.dataset.order); });
    list.forEach(function(c){ cards.appendChild(c); });
    document.getElementById('shown').textContent=shown+' of '+list.length+' volumes shown';
  }
  ['f-modality','f-problems','f-failed','f-sort'].forEach(function(id){ document.getElementById(id).addEventListener('change',apply); });
  if(typeof opts.modality==='string') document.getElementById('f-modality').value=opts.modality;
  if(opts.problems) document.getElementById('f-problems').checked=true;
  if(opts.nofailed) document.getElementById('f-failed').checked=false;
  if(typeof opts.sort==='string') document.getElementById('f-sort').value=opts.sort;
  apply();
})();
"""


def page(title: str, summary: str, controls: str, cards: str, failed: str, n_failed: int, notes: str, thumb_size: int) -> str:
    """The whole page: the parts given, with the inline style and script (no file or network fetched)."""
    # three thumbnails, each with a letter column on both sides, and the card's own padding
    style = STYLE.replace("CARDWIDTH", str(3 * (thumb_size + 24) + 2 * 6 + 8 + 4))
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{escape(title)}</h1>{notes}"
        f"<section class='summary'>{summary}</section>"
        f"<section id='failed-section'><h2>Series not converted ({n_failed})</h2>"
        + (
            f"<table id='failed'><tr><th>status</th><th>series</th><th>modality</th><th>shape</th><th>stage</th>"
            f"<th>reason</th></tr>{failed}</table>"
            if n_failed
            else "<p>none: every series found was converted.</p>"
        )
        + f"</section><div class='controls'>{controls}</div><section id='cards' class='cards'>{cards}</section>"
        f"<script>{SCRIPT}</script></body></html>"
    )


def controls(modalities: list[str]) -> str:
    """The filter and sort controls above the cards (``modalities`` in the select)."""
    return (
        "<label>modality <select id='f-modality'><option value=''>all</option>"
        + "".join(f"<option>{escape(m)}</option>" for m in modalities)
        + "</select></label> "
        "<label><input type='checkbox' id='f-problems'> only volumes with problems</label> "
        "<label><input type='checkbox' id='f-failed' checked> show series not converted</label> "
        "<label>sort <select id='f-sort'><option value='order'>store order</option>"
        "<option value='problems'>problems first</option><option value='modality'>modality</option>"
        "<option value='slices'>most slices</option></select></label> "
        "<span id='shown'></span> &middot; <span id='thumb-state'></span>"
    )


def notes(sources: list[Any] | None) -> str:
    """The notes under the title; ``sources`` named only for a store written with ``--keep-phi``."""
    text = (
        "<p class='note'>Letters at the edges name the anatomical direction, read from each volume's "
        "stored affine (radiological display: patient's right on the left of axial and coronal planes). "
        "Masks are blended in colour. Drawn from the stored slices only.</p>"
    )
    if sources is not None:
        text += f"<p class='note'>Written with --keep-phi: sources {escape(', '.join(map(str, sources)))}</p>"
    return text
