// Bundled by run.mjs with esbuild (scenario "Uppy interop") into one IIFE file for a test
// page: unmodified Uppy core + the tus plugin, exactly as an application would import them.
import Uppy from '@uppy/core';
import Tus from '@uppy/tus';

window.Uppy = Uppy;
window.UppyTus = Tus;
