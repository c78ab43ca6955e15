    hls::stream<${in_t}> in_s("flipq_in");
    for (int b = 0; b < ${n_in} / ${in_t}::size; b++) {
        ${in_t} beat;
        for (int j = 0; j < ${in_t}::size; j++)
            beat[j].range() = (long long)(x[b * ${in_t}::size + j] << ${in_shift});
        in_s.write(beat);
    }
    hls::stream<${out_t}> out_s("flipq_out");
    ${project}(in_s, out_s, (ap_uint<4>)planes);
    for (int b = 0; b < ${n_out} / ${out_t}::size; b++) {
        ${out_t} beat = out_s.read();
        for (int j = 0; j < ${out_t}::size; j++) {
            ${out_raw_t} r = beat[j].range();
            y[b * ${out_t}::size + j] = (int64_t)r.to_int64() >> ${out_shift};
        }
    }
