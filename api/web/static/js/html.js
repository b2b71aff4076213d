// The one place the vendored library is imported: Preact + hooks with htm's tagged templates
// (no JSX, so no build step). See web/vendor.py.
export {
  html,
  render,
  useCallback,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from "../vendor/preact-htm.js";
