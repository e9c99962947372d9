(function () {
  var errors = [];
  function record() { document.documentElement.setAttribute("data-report-errors", JSON.stringify(errors)); }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t.tagName === "IMG") { errors.push("image failed to load: " + (t.getAttribute("src") || "").slice(0, 80)); }
    else { errors.push("script error: " + (e.message || "unknown")); }
    record();
  }, true);
  window.addEventListener("load", function () {
    var imgs = document.images, loaded = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) { loaded++; }
      else if (imgs[i].complete && imgs[i].getAttribute("src")) { errors.push("broken image: " + imgs[i].getAttribute("src").slice(0, 80)); }
    }
    record();
    document.documentElement.setAttribute("data-images-loaded", String(loaded));
    document.documentElement.setAttribute("data-report-ready", "1");
  });
  record();
})();
