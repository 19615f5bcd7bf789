// The admin pages: a destructive form (data-confirm="question") is submitted only once the user agrees.
"use strict";

(function () {
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement)) return;
    const question = form.dataset.confirm;
    if (question && !window.confirm(question)) ev.preventDefault();
  });
})();
