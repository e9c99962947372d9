(function () {
  var filter = document.getElementById("class-filter"), all = document.getElementById("class-all");
  if (filter && all) {
    var lines = Array.prototype.slice.call(document.querySelectorAll("#class-table tbody tr"));
    var count = document.getElementById("class-count");
    var refilter = function () {
      var q = filter.value.trim().toLowerCase(), n = 0;
      lines.forEach(function (tr) {
        var show = q ? tr.getAttribute("data-cls").indexOf(q) >= 0 : (all.checked || !tr.hasAttribute("data-rest"));
        tr.hidden = !show;
        if (show) { n++; }
      });
      count.textContent = n + " of " + lines.length + " classes listed";
    };
    filter.addEventListener("input", refilter);
    all.addEventListener("change", refilter);
    refilter();
  }
})();
(function () {
  var gallery = document.getElementById("gallery");
  if (!gallery) { return; }
  var cards = Array.prototype.slice.call(gallery.querySelectorAll(".card"));
  var orders = JSON.parse(document.getElementById("gallery-orders").textContent);
  var size = parseInt(gallery.getAttribute("data-page-size"), 10) || 50;
  var select = document.getElementById("sort"), prev = document.getElementById("prev"), next = document.getElementById("next");
  var label = document.getElementById("page-label");
  var order = cards.slice(), page = 0;
  function show() {
    var pages = Math.max(1, Math.ceil(order.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    for (var i = 0; i < order.length; i++) { order[i].hidden = !(i >= page * size && i < (page + 1) * size); }
    label.textContent = "Page " + (page + 1) + " of " + pages + " (" + order.length + " images, " + size + " per page)";
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  select.addEventListener("change", function () {
    var idx = orders[select.value] || [];
    order = idx.map(function (i) { return cards[i]; });
    order.forEach(function (c) { gallery.appendChild(c); });
    page = 0;
    show();
  });
  prev.addEventListener("click", function () { page--; show(); gallery.scrollIntoView(); });
  next.addEventListener("click", function () { page++; show(); gallery.scrollIntoView(); });
  show();

  var box = document.getElementById("lightbox"), big = document.getElementById("lightbox-img");
  var text = document.getElementById("lightbox-text");
  document.addEventListener("click", function (e) {
    var t = e.target;
    if (t && t.tagName === "IMG" && t.classList.contains("zoom")) {
      big.src = t.src; big.alt = t.alt; text.textContent = t.alt; box.hidden = false;
    } else if (!box.hidden && box.contains(t)) { box.hidden = true; big.removeAttribute("src"); }
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") { box.hidden = true; } });
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
  });
})();
