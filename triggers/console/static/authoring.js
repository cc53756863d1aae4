/* The console's authoring pages (definitions, drafts, dry runs, review, audit); added to the router
   through window.ConsoleRoutes, drawn with window.Console's helpers (app.js). */
"use strict";
