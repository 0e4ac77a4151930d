/* The combine kernel, compiled: sigma clipping and averaging across frames, a row at a time.
 *
 * kernel.py describes the method (whole image rows sorted down their columns by a
 * comparator network, +inf for excluded values, kept values a contiguous range of each
 * sorted column); engine.py describes the statistics. This file is their implementation,
 * built by setuptools when the package is installed (setup.py), so nothing is compiled
 * or written at run time and an upgrade can never load a kernel built from other code.
 *
 * Bit for bit the numba kernel it replaced (issue 14; benchmarks/kernel_identity.py
 * compared them): every statistic is computed in double in the same order of operations,
 * sums run over the frames in their original order, and np.minimum/np.maximum are
 * written as numba lowered them (numba/np/npyfuncs.py np_real_minimum_impl: a NaN
 * first argument wins, then a NaN second, else a <= b ? a : b, so a tie keeps a). Build
 * with -ffp-contract=off and without -ffast-math: a fused multiply-add or a reordered
 * sum would change bits.
 *
 * Arrays come through the buffer protocol (no numpy headers: the build needs only a C
 * compiler and Python's headers). Rows are spread over plain pthreads, started per call
 * and joined before it returns, never OpenMP: libgomp's pool is unsafe after fork(),
 * and the combine child is forked from a server. The GIL is released while they run.
 *
 * The statistics of one row are written once for the stack's value type T (float or
 * double): this file includes itself twice with KERNEL_T defined (the part after #else).
 */
#ifndef KERNEL_T

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* Rows are handed out to threads in this many chunks (kernel.py CHUNKS). */
#define MAD_TO_STD 1.482602218505602 /* astropy's mad_std factor, 1 / Phi^-1(3/4) */
#define INT_ARRAYS 2
#define FLOAT_ARRAYS 10
#define ROW_ARRAYS 2

/* SIMD clones of the hot loops for the CPU the code runs on, picked once at load time
 * (GCC's ifunc dispatch); the default clone runs anywhere. x86-64-v4 (AVX-512 with DQ,
 * which converts int64 counts to double in vectors; AVX512F alone left the UNCERT
 * pass's last loop scalar, 15% of a combine), x86-64-v3 (AVX2). */
#ifndef HOT /* -DHOT= builds the default clone alone */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif
#endif

typedef struct {
    int average, clip, center_median, dev_mad;
    double sigma_low, sigma_high;
    Py_ssize_t maxiters;
    int errors;
} Params;

/* One thread's per-column work arrays (kernel.py _Work): views of its scratch slot. */
typedef struct {
    int64_t *first, *count;
    double *med, *mean, *dev, *lo, *hi, *kmin, *kmax, *total, *out, *unc;
} Work;

static Work work_of(int64_t *ints, double *floats, Py_ssize_t cols)
{
    Work w;
    w.first = ints;
    w.count = ints + cols;
    w.med = floats;
    w.mean = floats + cols;
    w.dev = floats + 2 * cols;
    w.lo = floats + 3 * cols;
    w.hi = floats + 4 * cols;
    w.kmin = floats + 5 * cols;
    w.kmax = floats + 6 * cols;
    w.total = floats + 7 * cols;
    w.out = floats + 8 * cols;
    w.unc = floats + 9 * cols;
    return w;
}

/* total / count for each column, NaN (numpy's positive quiet NaN, as numba's np.nan)
 * where count is 0. Divided for every column, then selected: a division only where
 * count > 0 is control flow that GCC will not vectorise (the division might trap), and
 * this loop ran scalar at 40% of the UNCERT pass. 0/0 gives x86's negative default NaN,
 * which the select replaces, so the bytes are those of the conditional form. */
HOT static void mean_of(const double *restrict total, const int64_t *restrict count,
                        double *restrict out, Py_ssize_t width)
{
    for (Py_ssize_t c = 0; c < width; c++) {
        double mean = total[c] / (double)count[c];
        out[c] = count[c] > 0 ? mean : NAN;
    }
}

/* np.minimum and np.maximum of two doubles, exactly as numba lowers them. */
static inline double nb_minimum(double a, double b)
{
    return a != a ? a : (a <= b ? a : b);
}

static inline double nb_maximum(double a, double b)
{
    return a != a ? a : (a >= b ? a : b);
}

#define KERNEL_T float
#define KERNEL_NAME(name) name##_f32
#include "_kernel.c"
#undef KERNEL_T
#undef KERNEL_NAME

#define KERNEL_T double
#define KERNEL_NAME(name) name##_f64
#include "_kernel.c"
#undef KERNEL_T
#undef KERNEL_NAME

/* ---- Buffers --------------------------------------------------------------------- */

enum Kind { K_F32, K_F64, K_I64, K_U8, K_W32, K_OTHER };

/* The element kind of a buffer, from its struct format and item size. */
static enum Kind kind_of(const Py_buffer *view)
{
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') { /* native, and this is a little-endian build */
        f++;
    }
    if (f[0] == '\0' || f[1] != '\0') {
        return K_OTHER;
    }
    switch (f[0]) {
    case 'f':
        return view->itemsize == 4 ? K_F32 : K_OTHER;
    case 'd':
        return view->itemsize == 8 ? K_F64 : K_OTHER;
    case 'q':
    case 'l':
        return view->itemsize == 8 ? K_I64 : K_OTHER;
    case 'B':
        return view->itemsize == 1 ? K_U8 : K_OTHER;
    case 'I':
    case 'i':
    case 'L':
        return view->itemsize == 4 ? K_W32 : K_OTHER;
    default:
        return K_OTHER;
    }
}

/* A C-contiguous buffer of `obj` with `ndim` dimensions, or -1 with an exception set. */
static int get_array(PyObject *obj, Py_buffer *view, int ndim, int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    if (ndim >= 0 && view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, not %d", name, ndim,
                     view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int expect_kind(const Py_buffer *view, enum Kind kind, const char *name, const char *what)
{
    if (kind_of(view) != kind) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s, not format '%s'", name, what,
                     view->format ? view->format : "B");
        return -1;
    }
    return 0;
}

static int expect_shape(const Py_buffer *view, const Py_ssize_t *shape, const char *name)
{
    for (int i = 0; i < view->ndim; i++) {
        if (shape[i] >= 0 && view->shape[i] != shape[i]) {
            PyErr_Format(PyExc_ValueError, "%s has %zd in dimension %d, expected %zd", name,
                         view->shape[i], i, shape[i]);
            return -1;
        }
    }
    return 0;
}

/* ---- The band: rows spread over threads ------------------------------------------ */

typedef struct {
    const void *stack; /* (n, rows, cols), float or double: f64 says which */
    void *out;         /* (rows, cols), float or double: out_f64 says which */
    uint8_t *mask;     /* (rows, cols) when p.errors */
    float *unc;        /* (rows, cols) when p.errors */
    const int64_t *pairs;
    Py_ssize_t npairs, n, rows, cols, chunks;
    int f64, out_f64;
    Params p;
    char *rows_scratch; /* (threads, ROW_ARRAYS, n, cols) of T */
    int64_t *ints;      /* (threads, INT_ARRAYS, cols) */
    double *floats;     /* (threads, FLOAT_ARRAYS, cols) */
    atomic_long next;   /* the next chunk to take */
} Band;

typedef struct {
    Band *band;
    Py_ssize_t slot;
} Worker;

/* Row r's result, and with p.errors its MASK (no value kept) and UNCERT, from w. */
HOT static void store_row(Band *b, const Work *w, Py_ssize_t r)
{
    Py_ssize_t cols = b->cols;
    if (b->out_f64) {
        memcpy((double *)b->out + r * cols, w->out, (size_t)cols * sizeof(double));
    } else {
        float *restrict o = (float *)b->out + r * cols;
        const double *restrict v = w->out;
        for (Py_ssize_t c = 0; c < cols; c++) {
            o[c] = (float)v[c];
        }
    }
    if (b->p.errors) {
        uint8_t *restrict m = b->mask + r * cols;
        float *restrict u = b->unc + r * cols;
        const int64_t *restrict count = w->count;
        const double *restrict unc = w->unc;
        for (Py_ssize_t c = 0; c < cols; c++) {
            m[c] = count[c] == 0 ? 1 : 0;
            u[c] = (float)unc[c];
        }
    }
}

/* Rows r0..r1-1 with the scratch of `slot`. */
static void band_rows(Band *b, Py_ssize_t slot, Py_ssize_t r0, Py_ssize_t r1)
{
    Py_ssize_t n = b->n, cols = b->cols, item = b->f64 ? 8 : 4;
    char *d = b->rows_scratch + slot * ROW_ARRAYS * n * cols * item;
    char *s = d + n * cols * item;
    Work w = work_of(b->ints + slot * INT_ARRAYS * cols, b->floats + slot * FLOAT_ARRAYS * cols,
                     cols);
    for (Py_ssize_t r = r0; r < r1; r++) {
        for (Py_ssize_t k = 0; k < n; k++) {
            const char *src = (const char *)b->stack + ((k * b->rows + r) * cols) * item;
            memcpy(d + k * cols * item, src, (size_t)(cols * item));
        }
        if (b->f64) {
            row_f64((const double *)d, (double *)s, b->pairs, b->npairs, &w, &b->p, n, cols);
        } else {
            row_f32((const float *)d, (float *)s, b->pairs, b->npairs, &w, &b->p, n, cols);
        }
        store_row(b, &w, r);
    }
}

static void *band_worker(void *arg)
{
    Worker *me = (Worker *)arg;
    Band *b = me->band;
    for (;;) {
        long chunk = atomic_fetch_add(&b->next, 1);
        if (chunk >= b->chunks) {
            return NULL;
        }
        band_rows(b, me->slot, chunk * b->rows / b->chunks, (chunk + 1) * b->rows / b->chunks);
    }
}

/* Every chunk, on up to `threads` threads (the caller's is slot 0). */
static void run_band(Band *b, Py_ssize_t threads)
{
    enum { MOST = 1024 };
    pthread_t ids[MOST];
    Worker workers[MOST];
    Py_ssize_t started = 0, want = threads < b->chunks ? threads : b->chunks;
    if (want > MOST) {
        want = MOST;
    }
    atomic_store(&b->next, 0);
    for (Py_ssize_t t = 1; t < want; t++) {
        workers[started].band = b;
        workers[started].slot = t;
        /* A thread that cannot start leaves its chunks to the others. */
        if (pthread_create(&ids[started], NULL, band_worker, &workers[started]) != 0) {
            break;
        }
        started++;
    }
    Worker self = {b, 0};
    band_worker(&self);
    for (Py_ssize_t t = 0; t < started; t++) {
        pthread_join(ids[t], NULL);
    }
}

typedef struct {
    Py_buffer stack, out, pairs, rows, ints, floats, mask, unc;
} Views;

static void release_views(Views *v)
{
    Py_buffer *all[] = {&v->stack, &v->out, &v->pairs, &v->rows,
                        &v->ints,  &v->floats, &v->mask, &v->unc};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i]->obj != NULL) {
            PyBuffer_Release(all[i]);
        }
    }
}

/* Check every array against the stack's (n, rows, cols) and fill in the band. */
static int check_band(Views *v, Band *b)
{
    enum Kind kind = kind_of(&v->stack);
    if (kind != K_F32 && kind != K_F64) {
        PyErr_SetString(PyExc_TypeError, "stack must hold float32 or float64 values");
        return -1;
    }
    b->f64 = kind == K_F64;
    b->n = v->stack.shape[0];
    b->rows = v->stack.shape[1];
    b->cols = v->stack.shape[2];
    Py_ssize_t out_shape[] = {b->rows, b->cols};
    enum Kind out_kind = kind_of(&v->out);
    if (expect_shape(&v->out, out_shape, "out") < 0) {
        return -1;
    }
    if (out_kind != K_F32 && out_kind != K_F64) {
        PyErr_SetString(PyExc_TypeError, "out must hold float32 or float64 values");
        return -1;
    }
    b->out_f64 = out_kind == K_F64;
    Py_ssize_t pairs_shape[] = {-1, 2};
    if (expect_kind(&v->pairs, K_I64, "pairs", "int64") < 0 ||
        expect_shape(&v->pairs, pairs_shape, "pairs") < 0) {
        return -1;
    }
    b->npairs = v->pairs.shape[0];
    const int64_t *pairs = (const int64_t *)v->pairs.buf;
    for (Py_ssize_t i = 0; i < 2 * b->npairs; i++) {
        if (pairs[i] < 0 || pairs[i] >= b->n) {
            PyErr_SetString(PyExc_ValueError, "pairs index a frame outside the stack");
            return -1;
        }
    }
    Py_ssize_t threads = v->rows.shape[0];
    Py_ssize_t rows_shape[] = {-1, ROW_ARRAYS, b->n, b->cols};
    Py_ssize_t ints_shape[] = {threads, INT_ARRAYS, b->cols};
    Py_ssize_t floats_shape[] = {threads, FLOAT_ARRAYS, b->cols};
    if (kind_of(&v->rows) != kind) {
        PyErr_SetString(PyExc_TypeError, "scratch.rows must hold the stack's dtype");
        return -1;
    }
    if (expect_shape(&v->rows, rows_shape, "scratch.rows") < 0 ||
        expect_kind(&v->ints, K_I64, "scratch.ints", "int64") < 0 ||
        expect_shape(&v->ints, ints_shape, "scratch.ints") < 0 ||
        expect_kind(&v->floats, K_F64, "scratch.floats", "float64") < 0 ||
        expect_shape(&v->floats, floats_shape, "scratch.floats") < 0) {
        return -1;
    }
    if (threads < 1) {
        PyErr_SetString(PyExc_ValueError, "scratch has no thread slot");
        return -1;
    }
    if (b->p.errors) {
        if (expect_kind(&v->mask, K_U8, "planes.mask", "uint8") < 0 ||
            expect_shape(&v->mask, out_shape, "planes.mask") < 0 ||
            expect_kind(&v->unc, K_F32, "planes.unc", "float32") < 0 ||
            expect_shape(&v->unc, out_shape, "planes.unc") < 0) {
            return -1;
        }
    }
    b->stack = v->stack.buf;
    b->out = v->out.buf;
    b->pairs = pairs;
    b->rows_scratch = (char *)v->rows.buf;
    b->ints = (int64_t *)v->ints.buf;
    b->floats = (double *)v->floats.buf;
    b->mask = (uint8_t *)v->mask.buf;
    b->unc = (float *)v->unc.buf;
    return 0;
}

static PyObject *py_combine_band(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *stack, *out, *pairs, *rows, *ints, *floats, *mask, *unc;
    Band b;
    memset(&b, 0, sizeof(b));
    if (!PyArg_ParseTuple(args, "OOOppppddnpOOOOO:combine_band", &stack, &out, &pairs,
                          &b.p.average, &b.p.clip, &b.p.center_median, &b.p.dev_mad,
                          &b.p.sigma_low, &b.p.sigma_high, &b.p.maxiters, &b.p.errors, &rows,
                          &ints, &floats, &mask, &unc)) {
        return NULL;
    }
    Views v;
    memset(&v, 0, sizeof(v));
    int ok = get_array(stack, &v.stack, 3, 0, "stack") == 0 &&
             get_array(out, &v.out, 2, 1, "out") == 0 &&
             get_array(pairs, &v.pairs, 2, 0, "pairs") == 0 &&
             get_array(rows, &v.rows, 4, 1, "scratch.rows") == 0 &&
             get_array(ints, &v.ints, 3, 1, "scratch.ints") == 0 &&
             get_array(floats, &v.floats, 3, 1, "scratch.floats") == 0 &&
             (!b.p.errors || (get_array(mask, &v.mask, 2, 1, "planes.mask") == 0 &&
                              get_array(unc, &v.unc, 2, 1, "planes.unc") == 0)) &&
             check_band(&v, &b) == 0;
    if (ok && b.rows > 0 && b.cols > 0 && b.n > 0) {
        b.chunks = b.rows < 64 ? b.rows : 64; /* kernel.py CHUNKS */
        Py_ssize_t threads = v.rows.shape[0];
        Py_BEGIN_ALLOW_THREADS
        run_band(&b, threads);
        Py_END_ALLOW_THREADS
    }
    release_views(&v);
    if (!ok) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- Small entry points: byte swapping, and the building blocks tests check ------- */

static PyObject *py_swap_bytes(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (get_array(arg, &view, -1, 1, "words") < 0) {
        return NULL;
    }
    if (view.itemsize != 4) {
        PyErr_SetString(PyExc_TypeError, "words must hold 32-bit values");
        PyBuffer_Release(&view);
        return NULL;
    }
    uint32_t *w = (uint32_t *)view.buf;
    Py_ssize_t count = view.len / 4;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        w[i] = __builtin_bswap32(w[i]);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* sort_columns(s, pairs, width): kernel.py _sort_columns, for the tests. */
static PyObject *py_sort_columns(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *s_obj, *p_obj;
    Py_ssize_t width;
    Py_buffer s, p;
    if (!PyArg_ParseTuple(args, "OOn:sort_columns", &s_obj, &p_obj, &width) ||
        get_array(s_obj, &s, 2, 1, "s") < 0) {
        return NULL;
    }
    if (get_array(p_obj, &p, 2, 0, "pairs") < 0) {
        PyBuffer_Release(&s);
        return NULL;
    }
    enum Kind kind = kind_of(&s);
    int ok = expect_kind(&p, K_I64, "pairs", "int64") == 0 && width == s.shape[1];
    if (ok && kind == K_F32) {
        sort_columns_f32((float *)s.buf, (const int64_t *)p.buf, p.shape[0], width);
    } else if (ok && kind == K_F64) {
        sort_columns_f64((double *)s.buf, (const int64_t *)p.buf, p.shape[0], width);
    } else if (ok) {
        PyErr_SetString(PyExc_TypeError, "s must hold float32 or float64 values");
        ok = 0;
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "width must be s.shape[1]");
    }
    PyBuffer_Release(&s);
    PyBuffer_Release(&p);
    if (!ok) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* mid(s, first, count, med) and mad(s, first, count, med, dev, total): kernel.py _mid
 * and _mad on 1-D work arrays of s.shape[1] columns (int64 first and count, float64
 * the rest), for the tests of the building blocks. */
static PyObject *column_stat(PyObject *args, int arrays)
{
    PyObject *objs[6] = {NULL};
    Py_buffer views[6];
    memset(views, 0, sizeof(views));
    if (!PyArg_UnpackTuple(args, arrays == 4 ? "mid" : "mad", arrays, arrays, &objs[0],
                           &objs[1], &objs[2], &objs[3], &objs[4], &objs[5])) {
        return NULL;
    }
    int ok = get_array(objs[0], &views[0], 2, 0, "s") == 0;
    enum Kind kind = ok ? kind_of(&views[0]) : K_OTHER;
    Py_ssize_t width = ok ? views[0].shape[1] : 0, shape[] = {width};
    for (int i = 1; ok && i < arrays; i++) {
        ok = get_array(objs[i], &views[i], 1, 1, "a work array") == 0 &&
             expect_kind(&views[i], i < 3 ? K_I64 : K_F64, "a work array",
                         i < 3 ? "int64" : "float64") == 0 &&
             expect_shape(&views[i], shape, "a work array") == 0;
    }
    if (ok && kind != K_F32 && kind != K_F64) {
        PyErr_SetString(PyExc_TypeError, "s must hold float32 or float64 values");
        ok = 0;
    }
    if (ok) {
        Work w;
        memset(&w, 0, sizeof(w));
        w.first = (int64_t *)views[1].buf;
        w.count = (int64_t *)views[2].buf;
        w.med = (double *)views[3].buf;
        Py_ssize_t n = views[0].shape[0];
        if (arrays == 4 && kind == K_F32) {
            mid_f32((const float *)views[0].buf, w.first, w.count, width, w.med);
        } else if (arrays == 4) {
            mid_f64((const double *)views[0].buf, w.first, w.count, width, w.med);
        } else {
            w.dev = (double *)views[4].buf;
            w.total = (double *)views[5].buf;
            if (kind == K_F32) {
                mad_f32((const float *)views[0].buf, &w, n, width);
            } else {
                mad_f64((const double *)views[0].buf, &w, n, width);
            }
        }
    }
    for (int i = 0; i < arrays; i++) {
        if (views[i].obj != NULL) {
            PyBuffer_Release(&views[i]);
        }
    }
    if (!ok) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_mid(PyObject *self, PyObject *args)
{
    (void)self;
    return column_stat(args, 4);
}

static PyObject *py_mad(PyObject *self, PyObject *args)
{
    (void)self;
    return column_stat(args, 6);
}

static PyMethodDef methods[] = {
    {"combine_band", py_combine_band, METH_VARARGS,
     "combine_band(stack, out, pairs, average, clip, center_median, dev_mad, sigma_low, "
     "sigma_high, maxiters, errors, rows, ints, floats, mask, unc): see kernel_band.py."},
    {"swap_bytes", py_swap_bytes, METH_O, "Reverse the bytes of every 32-bit word in place."},
    {"sort_columns", py_sort_columns, METH_VARARGS, "Sort every column with the network."},
    {"mid", py_mid, METH_VARARGS, "Median of each column's kept range, into med."},
    {"mad", py_mad, METH_VARARGS, "mad_std of each column's kept range about med, into dev."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernel", "The compiled combine kernel (see kernel.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

#ifndef KERNEL_SOURCE_SHA256
#define KERNEL_SOURCE_SHA256 "unknown" /* built without setup.py */
#endif

PyMODINIT_FUNC PyInit__kernel(void)
{
    PyObject *m = PyModule_Create(&module);
    /* kernel.py compares it with the _kernel.c beside it, where there is one. */
    if (m != NULL && PyModule_AddStringConstant(m, "SOURCE_SHA256", KERNEL_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

#else /* KERNEL_T defined: the statistics of one row, for values of type T */

#define T KERNEL_T
#define F(name) KERNEL_NAME(name)

/* Valid values into s (+inf for the rest), counted; bounds start as NaN (_load). */
HOT static void F(load)(const T *restrict d, T *restrict s, Work *w, int clip, Py_ssize_t n,
                        Py_ssize_t width)
{
    int64_t *restrict count = w->count;
    for (Py_ssize_t c = 0; c < width; c++) {
        count[c] = 0;
        w->first[c] = 0;
        w->lo[c] = NAN;
        w->hi[c] = NAN;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const T *restrict dk = d + k * width;
        T *restrict sk = s + k * width;
        /* Clipping ignores NaN and inf (astropy masks invalid values); without it only
         * NaN is dropped, as np.nanmean and np.nanmedian do. */
        if (clip) {
            for (Py_ssize_t c = 0; c < width; c++) {
                T x = dk[c];
                int ok = fabs((double)x) < INFINITY;
                sk[c] = ok ? x : (T)INFINITY;
                count[c] += ok;
            }
        } else {
            for (Py_ssize_t c = 0; c < width; c++) {
                T x = dk[c];
                int ok = x == x;
                sk[c] = ok ? x : (T)INFINITY;
                count[c] += ok;
            }
        }
    }
}

/* Sort every column of s (the frame axis) with the comparator network (_sort_columns).
 * s holds no NaN (invalid values are +inf), so these are plain min/max selects, which
 * vectorise over the row; a tie keeps a in both, as numba's np.minimum/np.maximum. */
HOT static void F(sort_columns)(T *s, const int64_t *pairs, Py_ssize_t npairs, Py_ssize_t width)
{
    for (Py_ssize_t p = 0; p < npairs; p++) {
        T *restrict si = s + pairs[2 * p] * width;
        T *restrict sj = s + pairs[2 * p + 1] * width;
        for (Py_ssize_t c = 0; c < width; c++) {
            T a = si[c];
            T b = sj[c];
            si[c] = a <= b ? a : b;
            sj[c] = a >= b ? a : b;
        }
    }
}

/* Median of each column's sorted range s[first:first+count]; NaN when empty (_mid).
 * In double before adding: numpy's median of the float64 stack averages the two
 * middle values in float64. */
static void F(mid)(const T *s, const int64_t *first, const int64_t *count, Py_ssize_t width,
                   double *out)
{
    for (Py_ssize_t c = 0; c < width; c++) {
        int64_t k = count[c];
        if (k == 0) {
            out[c] = NAN;
        } else {
            double lo = (double)s[(first[c] + (k - 1) / 2) * width + c];
            double hi = (double)s[(first[c] + k / 2) * width + c];
            out[c] = k % 2 == 1 ? lo : 0.5 * (lo + hi);
        }
    }
}

/* Frame-order sum of the values in [kmin, kmax], or of their squared deviations from
 * centre, into w->total (_range_sum). Adding 0.0 for the others, as numba did: it turns
 * a -0.0 total into +0.0. */
HOT static void F(range_sum)(const T *d, Work *w, const double *centre, int square,
                             Py_ssize_t n, Py_ssize_t width)
{
    double *restrict total = w->total;
    const double *restrict kmin = w->kmin, *restrict kmax = w->kmax;
    for (Py_ssize_t c = 0; c < width; c++) {
        total[c] = 0.0;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const T *restrict dk = d + k * width;
        if (square) {
            for (Py_ssize_t c = 0; c < width; c++) {
                double x = (double)dk[c];
                int inside = (x >= kmin[c]) & (x <= kmax[c]);
                double y = (x - centre[c]) * (x - centre[c]);
                total[c] += inside ? y : 0.0;
            }
        } else {
            for (Py_ssize_t c = 0; c < width; c++) {
                double x = (double)dk[c];
                int inside = (x >= kmin[c]) & (x <= kmax[c]);
                total[c] += inside ? x : 0.0;
            }
        }
    }
}

/* The k-th smallest |s - med| (0-based) of each column, every row sorted and kept
 * (_kth_deviation): the smallest max(A_i, B_(k+1-i)) over the splits i of the left run
 * A_i = |s[a - i] - med| and the right run B_j = |s[a + j - 1] - med|. */
HOT static void F(kth_deviation)(const T *s, const double *med, Py_ssize_t k, double *out,
                                 Py_ssize_t n, Py_ssize_t width)
{
    Py_ssize_t a = n / 2, b = n - a, rank = k + 1;
    Py_ssize_t start = rank - b > 0 ? rank - b : 0, stop = a < rank ? a : rank;
    for (Py_ssize_t c = 0; c < width; c++) {
        out[c] = INFINITY;
    }
    for (Py_ssize_t i = start; i <= stop; i++) {
        Py_ssize_t j = rank - i;
        const T *restrict left = i > 0 ? s + (a - i) * width : s;
        const T *restrict right = j > 0 ? s + (a + j - 1) * width : s;
        for (Py_ssize_t c = 0; c < width; c++) {
            double dl = i > 0 ? fabs((double)left[c] - med[c]) : -INFINITY;
            double dr = j > 0 ? fabs((double)right[c] - med[c]) : -INFINITY;
            out[c] = nb_minimum(out[c], nb_maximum(dl, dr));
        }
    }
}

/* Median |s - med| of column c's sorted range s[first:first+m] (_merged_deviation). */
static double F(merged_deviation)(const T *s, Py_ssize_t width, Py_ssize_t c, int64_t first,
                                  int64_t m, double med)
{
    if (m == 0) {
        return NAN;
    }
    int64_t left = first + m / 2 - 1, right = first + m / 2, stop = first + m;
    double lower = 0.0, upper = 0.0;
    for (int64_t rank = 0; rank < m / 2 + 1; rank++) {
        double dl = left >= first ? fabs((double)s[left * width + c] - med) : INFINITY;
        double dr = right < stop ? fabs((double)s[right * width + c] - med) : INFINITY;
        int take_left = dl < dr;
        upper = take_left ? dl : dr;
        left -= take_left ? 1 : 0;
        right += take_left ? 0 : 1;
        lower = rank == (m - 1) / 2 ? upper : lower;
    }
    return m % 2 == 1 ? lower : 0.5 * (lower + upper);
}

/* mad_std of each column's kept range about w->med, into w->dev (_mad). */
static void F(mad)(const T *s, Work *w, Py_ssize_t n, Py_ssize_t width)
{
    int uniform = 1;
    for (Py_ssize_t c = 0; c < width; c++) {
        uniform = uniform && w->first[c] == 0 && w->count[c] == n;
    }
    if (uniform) { /* every value kept: the first iteration on finite data */
        F(kth_deviation)(s, w->med, (n - 1) / 2, w->dev, n, width);
        F(kth_deviation)(s, w->med, n / 2, w->total, n, width);
        for (Py_ssize_t c = 0; c < width; c++) {
            double mad = n % 2 == 1 ? w->dev[c] : 0.5 * (w->dev[c] + w->total[c]);
            w->dev[c] = mad * MAD_TO_STD;
        }
        return;
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        w->dev[c] = F(merged_deviation)(s, width, c, w->first[c], w->count[c], w->med[c]) *
                    MAD_TO_STD;
    }
}

/* mad_std (about the median) or std (about the mean) of each pixel's kept values. */
static void F(deviation)(const T *d, const T *s, Work *w, int dev_mad, Py_ssize_t n,
                         Py_ssize_t width)
{
    if (dev_mad) {
        F(mad)(s, w, n, width);
        return;
    }
    F(range_sum)(d, w, w->mean, 1, n, width);
    for (Py_ssize_t c = 0; c < width; c++) { /* computed for every column: see mean_of */
        double dev = sqrt(w->total[c] / (double)w->count[c]);
        w->dev[c] = w->count[c] > 0 ? dev : NAN;
    }
}

/* Clipping bounds from the kept values, the range s[first:first+count] (_bounds). */
static void F(bounds)(const T *d, const T *s, Work *w, const Params *p, Py_ssize_t n,
                      Py_ssize_t width)
{
    for (Py_ssize_t c = 0; c < width; c++) {
        int kept = w->count[c] > 0;
        w->kmin[c] = kept ? (double)s[w->first[c] * width + c] : INFINITY;
        w->kmax[c] = kept ? (double)s[(w->first[c] + w->count[c] - 1) * width + c] : -INFINITY;
    }
    if (p->center_median || p->dev_mad) {
        F(mid)(s, w->first, w->count, width, w->med);
    }
    if (!(p->center_median && p->dev_mad)) {
        F(range_sum)(d, w, w->mean, 0, n, width);
        mean_of(w->total, w->count, w->mean, width);
    }
    F(deviation)(d, s, w, p->dev_mad, n, width);
    for (Py_ssize_t c = 0; c < width; c++) {
        if (w->count[c] > 0) { /* an emptied pixel keeps the bounds that emptied it */
            double centre = p->center_median ? w->med[c] : w->mean[c];
            w->lo[c] = centre - p->sigma_low * w->dev[c];
            w->hi[c] = centre + p->sigma_high * w->dev[c];
        }
    }
}

/* Drop kept values outside the bounds (a range shrinks from both ends); changed? */
static int F(narrow)(const T *s, Work *w, Py_ssize_t width)
{
    int changed = 0;
    for (Py_ssize_t c = 0; c < width; c++) {
        int64_t a = w->first[c], b = a + w->count[c], start = a, stop = b;
        while (start < stop && (double)s[start * width + c] < w->lo[c]) {
            start++;
        }
        while (stop > start && (double)s[(stop - 1) * width + c] > w->hi[c]) {
            stop--;
        }
        changed = changed || start != a || stop != b;
        w->first[c] = start;
        w->count[c] = stop - start;
    }
    return changed;
}

/* Frame-order sum and count of the valid values within the last bounds (_combine). */
HOT static void F(kept_sum)(const T *d, Work *w, int clip, Py_ssize_t n, Py_ssize_t width)
{
    double *restrict total = w->total;
    int64_t *restrict count = w->count;
    const double *restrict lo = w->lo, *restrict hi = w->hi;
    for (Py_ssize_t c = 0; c < width; c++) {
        total[c] = 0.0;
        count[c] = 0;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const T *restrict dk = d + k * width;
        if (clip) {
            for (Py_ssize_t c = 0; c < width; c++) {
                double x = (double)dk[c];
                int use = (fabs(x) < INFINITY) & !(x < lo[c]) & !(x > hi[c]);
                total[c] += use ? x : 0.0;
                count[c] += use;
            }
        } else {
            for (Py_ssize_t c = 0; c < width; c++) {
                double x = (double)dk[c];
                int use = x == x; /* not NaN */
                total[c] += use ? x : 0.0;
                count[c] += use;
            }
        }
    }
}

/* Average or median of every valid value within the last bounds, into w->out. */
static void F(combine)(const T *d, const T *s, Work *w, const Params *p, Py_ssize_t n,
                       Py_ssize_t width)
{
    F(kept_sum)(d, w, p->clip, n, width);
    if (p->average) {
        mean_of(w->total, w->count, w->out, width);
        return;
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        Py_ssize_t start = 0;
        while (p->clip && start < n && (double)s[start * width + c] < w->lo[c]) {
            start++;
        }
        w->first[c] = start;
    }
    F(mid)(s, w->first, w->count, width, w->out);
}

/* ccdproc's average uncertainty: nanstd (ddof 0) of the kept values / sqrt(kept),
 * the squared deviations from the mean (w->out) summed in frame order (_std_error). */
HOT static void F(std_error)(const T *d, Work *w, int clip, Py_ssize_t n, Py_ssize_t width)
{
    double *restrict total = w->total;
    const double *restrict lo = w->lo, *restrict hi = w->hi, *restrict mean = w->out;
    for (Py_ssize_t c = 0; c < width; c++) {
        total[c] = 0.0;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const T *restrict dk = d + k * width;
        if (clip) { /* two loops, not a test per value: the test kept it from vectorising well */
            for (Py_ssize_t c = 0; c < width; c++) {
                double x = (double)dk[c];
                int use = (fabs(x) < INFINITY) & !(x < lo[c]) & !(x > hi[c]);
                double y = (x - mean[c]) * (x - mean[c]);
                total[c] += use ? y : 0.0;
            }
        } else {
            for (Py_ssize_t c = 0; c < width; c++) {
                double x = (double)dk[c];
                double y = (x - mean[c]) * (x - mean[c]);
                total[c] += x == x ? y : 0.0;
            }
        }
    }
    for (Py_ssize_t c = 0; c < width; c++) { /* computed for every column: see mean_of */
        double kept = (double)w->count[c];
        double unc = sqrt(total[c] / kept) / sqrt(kept);
        w->unc[c] = w->count[c] > 0 ? unc : NAN;
    }
}

/* ccdproc's median uncertainty: 1.4826 x the MAD of the kept values about their
 * median (w->out) / sqrt(kept) (_mad_error). */
static void F(mad_error)(const T *s, Work *w, Py_ssize_t width)
{
    for (Py_ssize_t c = 0; c < width; c++) {
        double mad =
            F(merged_deviation)(s, width, c, w->first[c], w->count[c], w->out[c]) * MAD_TO_STD;
        w->unc[c] = w->count[c] > 0 ? mad / sqrt((double)w->count[c]) : NAN;
    }
}

/* One image row: d holds its (n, width) values; the result lands in w->out (_row). */
static void F(row)(const T *d, T *s, const int64_t *pairs, Py_ssize_t npairs, Work *w,
                   const Params *p, Py_ssize_t n, Py_ssize_t width)
{
    F(load)(d, s, w, p->clip, n, width);
    F(sort_columns)(s, pairs, npairs, width);
    if (p->clip) {
        for (Py_ssize_t iteration = 0; iteration < p->maxiters; iteration++) {
            F(bounds)(d, s, w, p, n, width);
            if (iteration == p->maxiters - 1 || !F(narrow)(s, w, width)) {
                break;
            }
        }
    }
    F(combine)(d, s, w, p, n, width);
    if (p->errors) { /* the kept values are known here: MASK and UNCERT in the same pass */
        if (p->average) {
            F(std_error)(d, w, p->clip, n, width);
        } else {
            F(mad_error)(s, w, width);
        }
    }
}

#undef T
#undef F

#endif /* KERNEL_T */
