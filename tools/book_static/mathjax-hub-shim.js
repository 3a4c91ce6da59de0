/* MathJax.Hub.Queue for MathJax 3: the one MathJax 2 call the ipywidgets embed manager makes.
 *
 * Why: @jupyter-widgets/controls (bundled in @jupyter-widgets/html-manager 1.x) typesets widget
 * labels with `if (window.MathJax !== undefined) MathJax.Hub.Queue(['Typeset', MathJax.Hub, el])`,
 * a MathJax 2 API. Sphinx loads MathJax 3, which has no `Hub`, so every widget page that also holds
 * math threw "Cannot read properties of undefined (reading 'Queue')" and its widgets did not render.
 *
 * What: `MathJax.Hub.Queue` that maps 'Typeset' jobs to MathJax 3's `typesetPromise([el])` (chained
 * on `MathJax.startup.promise`, the documented way to typeset after startup) and runs plain function
 * jobs. MathJax 3 replaces `window.MathJax` (the config object Sphinx writes first) with its own
 * object when its script runs, and the order of that script and this one is up to the page, so
 * `window.MathJax` becomes an accessor that puts `Hub` on whatever object is assigned to it. On a page
 * without math (no MathJax) it only defines the accessor: `window.MathJax` stays undefined and the
 * widgets skip typesetting, as before.
 *
 * Loaded by MyST-NB on widget pages only, before require.js and the embed manager (_config.yml,
 * nb_ipywidgets_js); copied next to them by tools/vendor_js.py (this file lives in tools/book_static/).
 */
(function () {
  'use strict';
  if (window.__unclipMathJaxHubShim) {
    return;
  }
  window.__unclipMathJaxHubShim = true;

  var pending = [];  // typeset jobs queued before MathJax 3 started

  function started(mj) {
    return mj && mj.startup && mj.startup.promise && true;
  }

  function run(job) {
    var mj = window.MathJax;
    if (!started(mj)) {
      pending.push(job);
      return;
    }
    mj.startup.promise = mj.startup.promise.then(job).catch(function (err) {
      console.warn('MathJax.Hub.Queue shim: a typeset job failed:', err);
    });
  }

  function typesetJob(element) {
    return function () {
      var mj = window.MathJax;
      if (mj && typeof mj.typesetPromise === 'function') {
        return mj.typesetPromise(element ? [element] : undefined);
      }
    };
  }

  function flush() {
    if (!started(window.MathJax)) {
      return;
    }
    var jobs = pending;
    pending = [];
    jobs.forEach(run);
  }

  var hub = {
    Queue: function () {
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (typeof job === 'function') {
          run(job);
        } else if (Array.isArray(job) && job[0] === 'Typeset') {
          run(typesetJob(job[2]));
        }  // other MathJax 2 jobs have no MathJax 3 meaning: dropped
      }
      return null;
    }
  };

  function install(mj) {
    if (mj && (typeof mj === 'object' || typeof mj === 'function') && !mj.Hub) {
      try {
        // not enumerable: MathJax 3 reads the config object's keys as component options
        Object.defineProperty(mj, 'Hub', {value: hub, configurable: true, writable: true, enumerable: false});
      } catch (err) {
        /* a frozen object: leave it */
      }
    }
    return mj;
  }

  var current = install(window.MathJax);
  try {
    Object.defineProperty(window, 'MathJax', {
      configurable: true,
      enumerable: true,
      get: function () {
        return current;
      },
      set: function (value) {
        current = install(value);
        setTimeout(flush, 0);  // MathJax 3 creates MathJax.startup later in the same script
      }
    });
  } catch (err) {
    /* window.MathJax not configurable: Hub is on the current object at least */
  }
  if (typeof document !== 'undefined') {
    document.addEventListener('DOMContentLoaded', flush);
    window.addEventListener('load', flush);
  }
})();
