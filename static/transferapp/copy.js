// "Copy" buttons next to a secret shown once (a new API token): a button with
// data-copy-target="ID" copies the text of the element with that id and says so on the button.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copyTarget);
  if (!source || !navigator.clipboard) {
    button.textContent = "Select it and copy";
    return;
  }
  navigator.clipboard.writeText(source.textContent.trim()).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Select it and copy"; },
  );
});
