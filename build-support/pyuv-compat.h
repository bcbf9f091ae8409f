/* Forced-include header that lets pyuv 1.4.0 (2017, the last release) build
 * and import on CPython >= 3.10.  Passed as CPPFLAGS="-include <abs path>"
 * by the Makefile; see docs/pyuv.md for the facts behind each line.
 * - PY_SSIZE_T_CLEAN: pyuv's "s#" formats need it, and this header pulls
 *   Python.h in before pyuv's own define.
 * - Py_REFCNT is no longer an lvalue on 3.10+ (src/handle.c assigns to it).
 * - PyUnicode_EncodeUTF8 & co. were removed in 3.11 (src/common.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX >= 0x030A0000
#undef Py_REFCNT
#define Py_REFCNT(ob) (((PyObject *)(ob))->ob_refcnt)
#endif
#if PY_VERSION_HEX >= 0x030B0000
#undef PyUnicode_AS_UNICODE
#undef PyUnicode_GET_SIZE
#define PyUnicode_AS_UNICODE(u) (u)
#define PyUnicode_GET_SIZE(u) 0
#define PyUnicode_EncodeUTF8(u, n, err) PyUnicode_AsEncodedString((u), "utf-8", (err))
#endif
