/*
 * The codec's compiled core: the per-datagram and per-set walk of a decode
 * call, and the gather of records out of the call's buffer.
 *
 * Python decides; this walks. Everything here runs once per call over all the
 * datagrams of the call (voipflow.collectors.codec.core wraps it), so the
 * Python side does per-call work only. Bad input never reads out of bounds:
 * every length is checked against the datagram (and the buffer) before use,
 * and every loop advances by at least 4 bytes, so it ends. A datagram the walk
 * does not understand is marked for the one-by-one decoder, which counts the
 * error with its reason; nothing here raises for bad export data.
 *
 * Layouts (RFC 7011 3.1 and 3.3.2; RFC 3954 5.1 and 5.2):
 *   IPFIX  version length exportTime sequence domain | setId setLength | ...
 *   v9     version count sysUptime unixSecs sequence sourceId | flowsetId length | ...
 *   v5     ... engine type, engine id at bytes 20, 21 (only the domain is read)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Columns of the per-datagram table written by walk(); keep in step with core.py. */
enum {
    H_VERSION, H_DOMAIN, H_KIND, H_SET_ID, H_SEQ, H_EXPORT_MS, H_UPTIME_MS,
    H_FIRST_SET, H_NSETS, H_FIRST_TSET, H_NTSETS, H_COLUMNS
};
/* H_KIND: one by one; only data sets of one id; template sets, then data sets of one id. */
enum { K_ONE = 0, K_PLAIN = 1, K_TEMPLATED = 2 };

static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

typedef struct {
    int64_t *v;
    Py_ssize_t len, cap;
} Vec;

static int vec_push(Vec *t, int64_t a, int64_t b, int64_t c) {
    if (t->len + 3 > t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 3 * 1024;
        int64_t *v = PyMem_Realloc(t->v, (size_t)cap * sizeof(int64_t));
        if (v == NULL) return -1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->len++] = a;
    t->v[t->len++] = b;
    t->v[t->len++] = c;
    return 0;
}

static PyObject *vec_bytes(Vec *t) {
    return PyBytes_FromStringAndSize((const char *)t->v, t->len * (Py_ssize_t)sizeof(int64_t));
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                      const char *what) {
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS
                                               : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (itemsize > 1 && view->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of items", what,
                     view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int is_template_set(int version, uint32_t set_id) {
    return version == 10 ? (set_id == 2 || set_id == 3) : (set_id == 0 || set_id == 1);
}

/* Walk one datagram of ``size`` bytes at ``p``; fill its row ``h``. */
static int walk_one(const uint8_t *p, int64_t at, int64_t size, int64_t *h, Vec *data,
                    Vec *tmpl) {
    memset(h, 0, H_COLUMNS * sizeof(int64_t));
    h[H_UPTIME_MS] = -1;
    if (size < 2) return 0;
    int version = (int)be16(p);
    h[H_VERSION] = version;
    int64_t pos, end;
    if (version == 10 && size >= 16) {
        h[H_DOMAIN] = be32(p + 12);
        h[H_SEQ] = be32(p + 8);
        h[H_EXPORT_MS] = (int64_t)be32(p + 4) * 1000;
        if (size < 20 || (int64_t)be16(p + 2) != size) return 0;
        pos = 16;
    } else if (version == 9 && size >= 20) {
        h[H_DOMAIN] = be32(p + 16);
        h[H_SEQ] = be32(p + 12);
        h[H_EXPORT_MS] = (int64_t)be32(p + 8) * 1000;
        h[H_UPTIME_MS] = be32(p + 4);
        if (size < 24) return 0;
        pos = 20;
    } else {
        if (version == 5 && size >= 22) h[H_DOMAIN] = be16(p + 20);
        return 0;
    }
    end = size;
    Py_ssize_t data0 = data->len, tmpl0 = tmpl->len;
    int64_t ndata = 0, ntmpl = 0;
    uint32_t data_id = 0;
    int ok = 1;
    /* Each set is at least 4 bytes, so this loop ends within size / 4 turns. */
    while (end - pos >= 4) {
        uint32_t set_id = be16(p + pos), slen = be16(p + pos + 2);
        if (slen < 4 || pos + (int64_t)slen > end) { ok = 0; break; }
        if (set_id >= 256) {
            if (ndata && set_id != data_id) { ok = 0; break; }
            data_id = set_id;
            if (vec_push(data, at + pos + 4, slen - 4, 0) < 0) return -1;
            ndata++;
        } else if (is_template_set(version, set_id) && !ndata) {
            if (vec_push(tmpl, set_id, at + pos + 4, at + pos + slen) < 0) return -1;
            ntmpl++;
        } else {
            ok = 0;  /* a reserved id, or a template set after data sets */
            break;
        }
        pos += slen;
    }
    if (!ok || pos != end || !ndata) {
        data->len = data0;  /* one by one: its sets are walked again there */
        tmpl->len = tmpl0;
        return 0;
    }
    h[H_KIND] = ntmpl ? K_TEMPLATED : K_PLAIN;
    h[H_SET_ID] = data_id;
    h[H_FIRST_SET] = data0 / 3;
    h[H_NSETS] = ndata;
    h[H_FIRST_TSET] = tmpl0 / 3;
    h[H_NTSETS] = ntmpl;
    return 0;
}

PyDoc_STRVAR(walk_doc,
"walk(buf, offsets, lengths, heads) -> (data_sets, template_sets)\n\n"
"Walk every datagram (``lengths[i]`` bytes at ``offsets[i]`` in ``buf``; int64\n"
"arrays) and fill ``heads`` (int64, len(offsets) rows of the H_* columns).\n"
"Returns two bytes objects of int64 triples: data sets (start of the records\n"
"in buf, bytes of records and padding, 0) and template sets (set id, start,\n"
"end in buf), the sets of each datagram together and in order.");

static PyObject *walk(PyObject *self, PyObject *args) {
    PyObject *o_buf, *o_off, *o_len, *o_heads;
    if (!PyArg_ParseTuple(args, "OOOO:walk", &o_buf, &o_off, &o_len, &o_heads)) return NULL;
    Py_buffer buf, off, len, heads;
    if (get_buffer(o_buf, &buf, 0, 1, "buf") < 0) return NULL;
    if (get_buffer(o_off, &off, 0, 8, "offsets") < 0) goto fail_buf;
    if (get_buffer(o_len, &len, 0, 8, "lengths") < 0) goto fail_off;
    if (get_buffer(o_heads, &heads, 1, 8, "heads") < 0) goto fail_len;
    Py_ssize_t n = off.len / 8;
    if (len.len != off.len || heads.len != n * H_COLUMNS * 8) {
        PyErr_SetString(PyExc_ValueError, "walk: offsets, lengths and heads disagree in size");
        goto fail_heads;
    }
    const uint8_t *b = buf.buf;
    const int64_t *offs = off.buf, *lens = len.buf;
    int64_t *h = heads.buf;
    Vec data = {0}, tmpl = {0};
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t at = offs[i], size = lens[i];
        if (at < 0 || size < 0 || at > buf.len || size > buf.len - at) {
            err = 1;
            break;
        }
        if (walk_one(b + at, at, size, h + i * H_COLUMNS, &data, &tmpl) < 0) {
            err = 2;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (err == 1)
        PyErr_SetString(PyExc_ValueError, "walk: a datagram lies outside the buffer");
    else if (err == 2)
        PyErr_NoMemory();
    else {
        PyObject *d = vec_bytes(&data), *t = d ? vec_bytes(&tmpl) : NULL;
        if (d && t) result = PyTuple_Pack(2, d, t);
        Py_XDECREF(d);
        Py_XDECREF(t);
    }
    PyMem_Free(data.v);
    PyMem_Free(tmpl.v);
    PyBuffer_Release(&heads);
    PyBuffer_Release(&len);
    PyBuffer_Release(&off);
    PyBuffer_Release(&buf);
    return result;
fail_heads:
    PyBuffer_Release(&heads);
fail_len:
    PyBuffer_Release(&len);
fail_off:
    PyBuffer_Release(&off);
fail_buf:
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(gather_doc,
"gather(buf, starts, counts, size, out) -> None\n\n"
"Copy ``counts[i]`` records of ``size`` bytes from ``starts[i]`` in ``buf``, for\n"
"every i in turn, to ``out`` (exactly their total size). One memcpy per set,\n"
"not per record. ValueError when a range lies outside ``buf``.");

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *o_buf, *o_st, *o_cn, *o_out;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OOOnO:gather", &o_buf, &o_st, &o_cn, &size, &o_out))
        return NULL;
    Py_buffer buf, st, cn, out;
    if (get_buffer(o_buf, &buf, 0, 1, "buf") < 0) return NULL;
    if (get_buffer(o_st, &st, 0, 8, "starts") < 0) goto fail_buf;
    if (get_buffer(o_cn, &cn, 0, 8, "counts") < 0) goto fail_st;
    if (get_buffer(o_out, &out, 1, 1, "out") < 0) goto fail_cn;
    Py_ssize_t n = st.len / 8;
    const char *msg = NULL;
    if (cn.len != st.len || size <= 0) msg = "gather: starts and counts disagree, or size <= 0";
    const int64_t *s = st.buf, *c = cn.buf;
    const uint8_t *b = buf.buf;
    uint8_t *o = out.buf;
    Py_ssize_t pos = 0;
    if (msg == NULL) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t at = s[i], k = c[i];
            if (k < 0 || at < 0 || at > buf.len || k > (buf.len - at) / size ||
                k * size > out.len - pos) {
                msg = "gather: a range lies outside the buffer or the output";
                break;
            }
            memcpy(o + pos, b + at, (size_t)(k * size));
            pos += k * size;
        }
        Py_END_ALLOW_THREADS
        if (msg == NULL && pos != out.len) msg = "gather: the output is not filled exactly";
    }
    if (msg) PyErr_SetString(PyExc_ValueError, msg);
    PyBuffer_Release(&out);
    PyBuffer_Release(&cn);
    PyBuffer_Release(&st);
    PyBuffer_Release(&buf);
    if (msg) return NULL;
    Py_RETURN_NONE;
fail_cn:
    PyBuffer_Release(&cn);
fail_st:
    PyBuffer_Release(&st);
fail_buf:
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(addr4_doc,
"addr4(records, itemsize, offset, out) -> None\n\n"
"IPv4 addresses (4 bytes at ``offset`` in each record of ``itemsize`` bytes)\n"
"as 16-byte IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) into ``out``, one per\n"
"record: len(out) / 16 records. ValueError when they do not fit ``records``.");

static PyObject *addr4(PyObject *self, PyObject *args) {
    PyObject *o_rec, *o_out;
    Py_ssize_t itemsize, offset;
    if (!PyArg_ParseTuple(args, "OnnO:addr4", &o_rec, &itemsize, &offset, &o_out)) return NULL;
    Py_buffer rec, out;
    if (get_buffer(o_rec, &rec, 0, 1, "records") < 0) return NULL;
    if (get_buffer(o_out, &out, 1, 16, "out") < 0) {
        PyBuffer_Release(&rec);
        return NULL;
    }
    Py_ssize_t n = out.len / 16;
    int ok = itemsize > 0 && offset >= 0 && offset <= itemsize - 4 &&
             n <= rec.len / itemsize;
    if (ok) {
        const uint8_t *r = (const uint8_t *)rec.buf + offset;
        uint8_t *o = out.buf;
        static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++, r += itemsize, o += 16) {
            memcpy(o, prefix, 12);
            memcpy(o + 12, r, 4);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&rec);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "addr4: the field or the records do not fit");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, walk_doc},
    {"gather", gather, METH_VARARGS, gather_doc},
    {"addr4", addr4, METH_VARARGS, addr4_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_walk",
    .m_doc = "The codec's compiled core (see voipflow.collectors.codec.core).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__walk(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "H_COLUMNS", H_COLUMNS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
