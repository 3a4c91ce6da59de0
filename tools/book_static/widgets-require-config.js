/* Where require.js puts the ipywidgets embed manager, so its fonts load from _static/offline/.
 *
 * embed-amd.js (@jupyter-widgets/html-manager) defines its modules by name ('@jupyter-widgets/base',
 * '@jupyter-widgets/controls', '@jupyter-widgets/html-manager/dist/libembed-amd', ...) and each
 * takes the folder of its module URL, as require.js resolves the name, as the base URL of the
 * fonts its CSS loads (Font Awesome). Unconfigured, require.js resolves the names against the page:
 * <page folder>/@jupyter-widgets/…, which is not in the book (404s; which module's @font-face wins
 * is a race). Each name is mapped here into the folder tools/vendor_js.py copies embed-amd.js and
 * those fonts to. Nothing is fetched under these URLs: the modules are already defined.
 *
 * Loaded by MyST-NB on widget pages, after require.js and before embed-amd.js (_config.yml,
 * nb_ipywidgets_js); copied to _static/offline/ by tools/vendor_js.py (it lives in tools/book_static/).
 */
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || !script.src || typeof window.requirejs !== 'function') {
    return;
  }
  var folder = new URL('html-manager/', script.src).href;  // ends in '/'
  var paths = {'@jupyter-widgets/html-manager/dist': folder.slice(0, -1)};  // …/dist/libembed-amd
  // the other modules embed-amd.js defines: name -> folder + last part (+ '.js', never fetched)
  ['base', 'base7', 'controls', 'controls7', 'html-manager'].forEach(function (name) {
    paths['@jupyter-widgets/' + name] = folder + name;
  });
  window.requirejs.config({paths: paths});
})();
