/*
 * The collector's compiled burst read: datagrams back to back into one buffer.
 *
 * The same reads as voipflow.collectors.receiver.drain_into (one recvfrom per
 * datagram, each landing right after the one before, a burst stopping when
 * fewer than ``max_datagram`` bytes are left), without a Python step per
 * datagram: the loop runs without the GIL and each sender comes back as its
 * 16-byte address (IPv4 mapped into ::ffff:0:0/96), which is what the
 * decoder keys exporters by. Consecutive datagrams of one sender share one
 * bytes object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

static void addr16(const struct sockaddr_storage *sa, unsigned char out[16]) {
    memset(out, 0, 16);
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &in->sin_addr, 4);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(out, &in6->sin6_addr, 16);
    }
}

PyDoc_STRVAR(recv_burst_doc,
"recv_burst(fd, buf, pos, limit, max_datagram, sizes, senders) -> (pos, errno)\n\n"
"Read up to ``limit`` queued datagrams from the non-blocking socket ``fd`` into\n"
"``buf`` from ``pos`` on, back to back, while at least ``max_datagram`` bytes\n"
"are left. Appends each one's size to the list ``sizes`` and its sender's\n"
"16-byte address to the list ``senders``. Returns the position after the last\n"
"and the errno that ended the burst (0: nothing left, or the limit).");

static PyObject *recv_burst(PyObject *self, PyObject *args) {
    int fd;
    PyObject *o_buf, *sizes, *senders;
    Py_ssize_t pos, limit, maxdg;
    if (!PyArg_ParseTuple(args, "iOnnnO!O!:recv_burst", &fd, &o_buf, &pos, &limit, &maxdg,
                          &PyList_Type, &sizes, &PyList_Type, &senders))
        return NULL;
    if (limit < 0 || maxdg <= 0 || pos < 0) {
        PyErr_SetString(PyExc_ValueError, "recv_burst: negative limit or position");
        return NULL;
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(o_buf, &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    /* Read in chunks of CHUNK datagrams without the GIL, then list them. */
    enum { CHUNK = 512 };
    struct sockaddr_storage *addrs = PyMem_Malloc(CHUNK * sizeof(*addrs));
    Py_ssize_t *lens = PyMem_Malloc(CHUNK * sizeof(*lens));
    PyObject *prev = NULL, *result = NULL;
    if (addrs == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *b = buf.buf;
    Py_ssize_t end = buf.len - maxdg, total = 0;
    unsigned char last[16];
    int err = 0, more = 1;
    while (more && total < limit) {
        Py_ssize_t n = 0, want = limit - total < CHUNK ? limit - total : CHUNK;
        Py_BEGIN_ALLOW_THREADS
        while (n < want && pos <= end) {
            socklen_t alen = sizeof(struct sockaddr_storage);
            ssize_t r = recvfrom(fd, b + pos, (size_t)maxdg, MSG_DONTWAIT,
                                 (struct sockaddr *)&addrs[n], &alen);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
                break;
            }
            lens[n++] = r;
            pos += r;
        }
        Py_END_ALLOW_THREADS
        more = n == want;
        total += n;
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char a[16];
            addr16(&addrs[i], a);
            if (prev == NULL || memcmp(a, last, 16) != 0) {
                Py_XDECREF(prev);
                prev = PyBytes_FromStringAndSize((const char *)a, 16);
                if (prev == NULL) goto done;
                memcpy(last, a, 16);
            }
            PyObject *size = PyLong_FromSsize_t(lens[i]);
            if (size == NULL) goto done;
            int bad = PyList_Append(sizes, size) < 0 || PyList_Append(senders, prev) < 0;
            Py_DECREF(size);
            if (bad) goto done;
        }
    }
    result = Py_BuildValue("ni", pos, err);
done:
    Py_XDECREF(prev);
    PyMem_Free(addrs);
    PyMem_Free(lens);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"recv_burst", recv_burst, METH_VARARGS, recv_burst_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_recv",
    .m_doc = "The collector's compiled burst read (see voipflow.collectors.receiver).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__recv(void) { return PyModule_Create(&module); }
