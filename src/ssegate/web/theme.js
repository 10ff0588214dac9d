// Runs before the page is painted (a classic script in <head>): apply the colour theme the person chose, so
// a dark page never flashes white. No choice saved: the page follows prefers-color-scheme (style.css).
(function () {
  try {
    var theme = localStorage.getItem("ssegate.theme");
    if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  } catch (e) {
    // storage disabled: follow the system
  }
})();
