    ${in_t} in_a[${n_in}];
    for (int i = 0; i < ${n_in}; i++) in_a[i].range() = (long long)(x[i] << ${in_shift});
    ${out_t} out_a[${n_out}];
    ${project}(in_a, out_a, (ap_uint<4>)planes);
    for (int i = 0; i < ${n_out}; i++) {
        ${out_raw_t} r = out_a[i].range();
        y[i] = (int64_t)r.to_int64() >> ${out_shift};
    }
