// The console's only script besides htmx: a print button (inline handlers are blocked
// by the Content-Security-Policy, script-src 'self').
document.addEventListener("click", function (event) {
  var target = event.target;
  if (target instanceof Element && target.closest("[data-print]")) {
    window.print();
  }
});
