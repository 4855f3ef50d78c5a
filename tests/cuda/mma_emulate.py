"""mma_emulate.py: flash_mma.cu's kernels transcribed to numpy, warp by warp,
with every mma.sync m16n8k16 rebuilt from the 32 lanes' registers by the
fragment layouts of the PTX ISA, and compared with exact attention (forward
and backward, causal, ALiBi). It checks the kernels' index arithmetic (which
lane holds which score, how C fragments become A fragments, the transposed
tiles, the masks, base-2 softmax) on a machine without a GPU; it is a
transcription, so keep it in step with flash_mma.cu. Not part of CTest:
run `python3 tests/cuda/mma_emulate.py` (numpy) after changing the kernels;
errors must stay at bf16 level (~1e-2 of the largest element)."""
import numpy as np
rng=np.random.default_rng(0)
def bf(x): # round to bf16
    x=np.asarray(x,dtype=np.float32); u=x.view(np.uint32).astype(np.uint64)
    u=((u+0x7fff+((u>>16)&1))>>16)<<16
    return u.astype(np.uint32).view(np.float32)
G=np.arange(32)//4; Tq=np.arange(32)%4
def frag_a(m,r0,c0):
    # returns regs[lane][4][2]
    a=np.zeros((32,4,2),np.float32)
    for l in range(32):
        g,t=G[l],Tq[l]
        for i,(dr,dc) in enumerate([(0,0),(8,0),(0,8),(8,8)]):
            a[l,i]=m[r0+g+dr, c0+2*t+dc : c0+2*t+dc+2]
    return a
def b_regs(m,n0,c0):
    b=np.zeros((32,2,2),np.float32)
    for l in range(32):
        g,t=G[l],Tq[l]
        b[l,0]=m[n0+g, c0+2*t:c0+2*t+2]; b[l,1]=m[n0+g, c0+2*t+8:c0+2*t+10]
    return b
def mma(c,a,b):
    A=np.zeros((16,16)); B=np.zeros((16,8))
    for l in range(32):
        g,t=G[l],Tq[l]
        A[g,2*t:2*t+2]=a[l,0]; A[g+8,2*t:2*t+2]=a[l,1]; A[g,2*t+8:2*t+10]=a[l,2]; A[g+8,2*t+8:2*t+10]=a[l,3]
        B[2*t:2*t+2,g]=b[l,0]; B[2*t+8:2*t+10,g]=b[l,1]
    D=A@B
    for l in range(32):
        g,t=G[l],Tq[l]
        c[l,0]+=D[g,2*t]; c[l,1]+=D[g,2*t+1]; c[l,2]+=D[g+8,2*t]; c[l,3]+=D[g+8,2*t+1]
def mma_bt(c,a,m,n0,c0): mma(c,a,b_regs(m,n0,c0))
def c_to_a(x,kk):
    a=np.zeros((32,4,2),np.float32)
    a[:,0]=bf(x[2*kk][:,0:2]); a[:,1]=bf(x[2*kk][:,2:4]); a[:,2]=bf(x[2*kk+1][:,0:2]); a[:,3]=bf(x[2*kk+1][:,2:4])
    return a
L2E=1.4426950408889634; LN2=0.6931471805599453
def load(src,valid,rows,hd,HD,trans=False):
    t=np.zeros((rows,HD),np.float32); n=max(0,min(valid,rows)); t[:n,:hd]=src[:n,:hd]; t=bf(t)
    return t.T.copy() if trans else t
def ref(q,k,v,slope):
    T,hd=q.shape; s=q@k.T/np.sqrt(hd); i=np.arange(T)[:,None]; j=np.arange(T)[None,:]
    s=s-slope*(i-j); s[j>i]=-np.inf; m=s.max(1,keepdims=True); p=np.exp(s-m); l=p.sum(1,keepdims=True)
    return p/l, (m+np.log(l))[:,0], s
def fwd(q,k,v,slope,HD):
    T,hd=q.shape; out=np.zeros_like(q); lse=np.zeros(T); ROWS=64; KEYS=64
    scale2=L2E/np.sqrt(hd); slope2=slope*L2E
    for q0 in range(0,T,ROWS):
        Qs=load(q[q0:],T-q0,ROWS,hd,HD)
        for w in range(4):
            w0=q0+w*16
            qa=[frag_a(Qs,w*16,kk*16) for kk in range(HD//16)]
            row=[w0+G,w0+G+8]; m=[np.full(32,-np.inf),np.full(32,-np.inf)]; l=[np.zeros(32),np.zeros(32)]
            o=[np.zeros((32,4)) for _ in range(HD//8)]
            last=min(T-1,q0+ROWS-1)
            for j0 in range(0,last+1,KEYS):
                Ks=load(k[j0:],T-j0,KEYS,hd,HD); Vt=load(v[j0:],T-j0,KEYS,hd,HD,True)
                if w0+15<j0: continue
                s=[np.zeros((32,4)) for _ in range(KEYS//8)]
                for nt in range(KEYS//8):
                    for kk in range(HD//16): mma_bt(s[nt],qa[kk],Ks,nt*8,kk*16)
                corr=[None,None]
                for hr in range(2):
                    mt=np.full(32,-np.inf)
                    for nt in range(KEYS//8):
                        for e in range(2):
                            j=j0+nt*8+2*Tq+e; ok=(j<=row[hr])&(j<T)
                            x=np.where(ok, s[nt][:,2*hr+e]*scale2-slope2*(row[hr]-j), -np.inf)
                            s[nt][:,2*hr+e]=x; mt=np.maximum(mt,x)
                    mt=mt.reshape(8,4).max(1).repeat(4)
                    mn=np.maximum(m[hr],mt)
                    with np.errstate(invalid='ignore'): corr[hr]=np.exp2(m[hr]-mn)
                    sm=np.zeros(32)
                    for nt in range(KEYS//8):
                        for e in range(2):
                            p=np.exp2(s[nt][:,2*hr+e]-mn); s[nt][:,2*hr+e]=p; sm+=p
                    sm=sm.reshape(8,4).sum(1).repeat(4)
                    l[hr]=l[hr]*corr[hr]+sm; m[hr]=mn
                for nd in range(HD//8):
                    o[nd][:,0:2]*=corr[0][:,None]; o[nd][:,2:4]*=corr[1][:,None]
                for kk in range(KEYS//16):
                    pa=c_to_a(s,kk)
                    for nd in range(HD//8): mma_bt(o[nd],pa,Vt,nd*8,kk*16)
            for hr in range(2):
                for lane in range(32):
                    i=row[hr][lane]
                    if i>=T: continue
                    for nd in range(HD//8):
                        for e in range(2):
                            col=nd*8+2*Tq[lane]+e
                            if col<hd: out[i,col]=o[nd][lane,2*hr+e]/l[hr][lane]
                    lse[i]=(m[hr][lane]+np.log2(l[hr][lane]))*LN2
    return out,lse
for (T,hd,slope) in [(70,32,0.3),(130,64,0.0),(33,48,0.5)]:
    HD=16 if hd<=16 else 32 if hd<=32 else 64 if hd<=64 else 128
    q=rng.standard_normal((T,hd)).astype(np.float32); k=rng.standard_normal((T,hd)).astype(np.float32); v=rng.standard_normal((T,hd)).astype(np.float32)
    P,lse_r,_=ref(q.astype(np.float64),k.astype(np.float64),v.astype(np.float64),slope)
    out_r=P@v
    out,lse=fwd(q,k,v,slope,HD)
    print("fwd T%d hd%d: out err %.2e (max |out| %.2f), lse err %.2e"%(T,hd,np.abs(out-out_r).max(),np.abs(out_r).max(),np.abs(lse-lse_r).max()))

def bwd(q,k,v,dout,out,lse,slope,HD):
    # single head (nh=nkv=1, B=1); hd == HD
    T,hd=q.shape; ROWS=64; dq=np.zeros_like(q); dk=np.zeros_like(q); dv=np.zeros_like(q)
    scale2=L2E/np.sqrt(hd); slope2=slope*L2E; scale=scale2*LN2
    dsum=(dout*out).sum(1)
    # kv kernel
    for j0 in range(0,T,ROWS):
        Ks=load(k[j0:],T-j0,ROWS,hd,HD); Vs=load(v[j0:],T-j0,ROWS,hd,HD)
        for w in range(4):
            ka=[frag_a(Ks,w*16,kk*16) for kk in range(HD//16)]; va=[frag_a(Vs,w*16,kk*16) for kk in range(HD//16)]
            dK=[np.zeros((32,4)) for _ in range(HD//8)]; dV=[np.zeros((32,4)) for _ in range(HD//8)]
            key=[j0+w*16+G, j0+w*16+G+8]
            for i0 in range(j0,T,ROWS):
                Qs=load(q[i0:],T-i0,ROWS,hd,HD); Qt=load(q[i0:],T-i0,ROWS,hd,HD,True)
                dOs=load(dout[i0:],T-i0,ROWS,hd,HD); dOt=load(dout[i0:],T-i0,ROWS,hd,HD,True)
                ls=np.zeros(ROWS); Ds=np.zeros(ROWS); n=min(ROWS,T-i0); ls[:n]=lse[i0:i0+n]*L2E; Ds[:n]=dsum[i0:i0+n]
                if i0+ROWS-1 < j0+w*16: continue
                sT=[np.zeros((32,4)) for _ in range(8)]; dpT=[np.zeros((32,4)) for _ in range(8)]
                for nt in range(8):
                    for kk in range(HD//16):
                        mma_bt(sT[nt],ka[kk],Qs,nt*8,kk*16); mma_bt(dpT[nt],va[kk],dOs,nt*8,kk*16)
                for nt in range(8):
                    for e in range(4):
                        c=nt*8+2*Tq+(e&1); i=i0+c; j=key[e>>1]; ok=(i<T)&(j<=i)
                        p=np.where(ok, np.exp2(sT[nt][:,e]*scale2-slope2*(i-j)-ls[np.minimum(c,63)]), 0.0)
                        sT[nt][:,e]=p; dpT[nt][:,e]=p*(dpT[nt][:,e]-Ds[np.minimum(c,63)])
                for kq in range(4):
                    pa=c_to_a(sT,kq); dsa=c_to_a(dpT,kq)
                    for nd in range(HD//8):
                        mma_bt(dV[nd],pa,dOt,nd*8,kq*16); mma_bt(dK[nd],dsa,Qt,nd*8,kq*16)
            for hr in range(2):
                for lane in range(32):
                    j=key[hr][lane]
                    if j>=T: continue
                    for nd in range(HD//8):
                        col=nd*8+2*Tq[lane]
                        dk[j,col:col+2]=dK[nd][lane,2*hr:2*hr+2]*scale; dv[j,col:col+2]=dV[nd][lane,2*hr:2*hr+2]
    # q kernel
    for i0 in range(0,T,ROWS):
        Qs=load(q[i0:],T-i0,ROWS,hd,HD); dOs=load(dout[i0:],T-i0,ROWS,hd,HD)
        for w in range(4):
            qa=[frag_a(Qs,w*16,kk*16) for kk in range(HD//16)]; da=[frag_a(dOs,w*16,kk*16) for kk in range(HD//16)]
            row=[i0+w*16+G,i0+w*16+G+8]
            l2=[np.where(r<T, lse[np.minimum(r,T-1)]*L2E,0) for r in row]; D=[np.where(r<T, dsum[np.minimum(r,T-1)],0) for r in row]
            dQ=[np.zeros((32,4)) for _ in range(HD//8)]
            for j0 in range(0,i0+1,ROWS):
                Ks=load(k[j0:],T-j0,ROWS,hd,HD); Kt=load(k[j0:],T-j0,ROWS,hd,HD,True); Vs=load(v[j0:],T-j0,ROWS,hd,HD)
                if i0+w*16+15<j0: continue
                s=[np.zeros((32,4)) for _ in range(8)]; dp=[np.zeros((32,4)) for _ in range(8)]
                for nt in range(8):
                    for kk in range(HD//16):
                        mma_bt(s[nt],qa[kk],Ks,nt*8,kk*16); mma_bt(dp[nt],da[kk],Vs,nt*8,kk*16)
                for nt in range(8):
                    for e in range(4):
                        hr=e>>1; i=row[hr]; j=j0+nt*8+2*Tq+(e&1); ok=(i<T)&(j<=i)
                        p=np.exp2(s[nt][:,e]*scale2-slope2*(i-j)-l2[hr])
                        dp[nt][:,e]=np.where(ok, p*(dp[nt][:,e]-D[hr]), 0.0)
                for kk in range(4):
                    dsa=c_to_a(dp,kk)
                    for nd in range(HD//8): mma_bt(dQ[nd],dsa,Kt,nd*8,kk*16)
            for hr in range(2):
                for lane in range(32):
                    i=row[hr][lane]
                    if i>=T: continue
                    for nd in range(HD//8):
                        col=nd*8+2*Tq[lane]; dq[i,col:col+2]=dQ[nd][lane,2*hr:2*hr+2]*scale
    return dq,dk,dv

def ref_bwd(q,k,v,dout,slope):
    P,lse,_=ref(q,k,v,slope); out=P@v; hd=q.shape[1]
    dv=P.T@dout; dP=dout@v.T; D=(dout*out).sum(1,keepdims=True); dS=P*(dP-D)
    return dS@k/np.sqrt(hd), dS.T@q/np.sqrt(hd), dv, out, lse
for (T,hd,slope) in [(70,32,0.3),(130,64,0.0),(33,48,0.5),(200,16,0.2)]:
    q,k,v,do=[rng.standard_normal((T,hd)) for _ in range(4)]
    dq_r,dk_r,dv_r,out_r,lse_r=ref_bwd(q,k,v,do,slope)
    dq,dk,dv=bwd(q.astype(np.float32),k.astype(np.float32),v.astype(np.float32),do.astype(np.float32),out_r.astype(np.float32),lse_r,slope,hd)
    f=lambda a,b: np.abs(a-b).max()/np.abs(b).max()
    print("bwd T%d hd%d: dq %.2e dk %.2e dv %.2e (relative to the largest element)"%(T,hd,f(dq,dq_r),f(dk,dk_r),f(dv,dv_r)))
